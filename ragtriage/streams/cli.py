"""``ragtriage worker``: evaluate samples from the Redis Stream until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from ragtriage.config import Config
from ragtriage.handoff.redis_stream import DEFAULT_GROUP, StreamWorker
from ragtriage.runtime import build
from ragtriage.sample import DEFAULT_STREAM

logger = logging.getLogger(__name__)


def worker(
    queue: str = typer.Option(None, help="redis://host:port/db of the sample stream (default RAGTRIAGE_QUEUE_URL)."),
    concurrency: int = typer.Option(8, min=1, help="Samples evaluated at once."),
    stream: str = typer.Option(DEFAULT_STREAM, help="Stream name."),
    group: str = typer.Option(DEFAULT_GROUP, help="Consumer group shared by the fleet."),
    consumer: str = typer.Option(None, help="This consumer's name (default: host-pid)."),
    claim_idle_s: float = typer.Option(30.0, help="Take over entries pending this long (their worker died)."),
    max_deliveries: int = typer.Option(3, min=1, help="Deliveries before an entry goes to the dead-letter stream."),
    endpoint: str = typer.Option(None, help="Phoenix URL (default PHOENIX_COLLECTOR_ENDPOINT)."),
    project: str = typer.Option(None, help="Phoenix project (default PHOENIX_PROJECT_NAME)."),
    metrics_port: int = typer.Option(None, help="Serve Prometheus /metrics on this port."),
) -> None:
    """Consume the sample queue: evaluate, write back to Phoenix, alert fleet-wide, acknowledge.

    Judges, rules file, calibration file, budget and alert sinks come from the same ``RAGTRIAGE_*``
    settings as ``instrument()``; the fleet's alert windows are kept in the queue's Redis, so N workers
    alert once.

    Example::

        RAGTRIAGE_LOCAL_JUDGE_URL=http://vllm:8000/v1 ragtriage worker --queue redis://redis:6379/0
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpx2", "httpcore", "openai"):  # one line per judge call would cost CPU and fill pipes
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        config = Config.from_env(endpoint=endpoint, project_name=project, evaluate_in="queue", queue_url=queue)
        runtime = build(config, "worker")
    except ValueError as exc:  # a missing queue, a broken rules or calibration file: say so, exit 2
        raise typer.BadParameter(str(exc)) from None
    assert runtime.pipeline is not None and config.queue_url is not None  # Config requires it with "queue"
    if metrics_port is not None:
        runtime.start_metrics(port=metrics_port)
    consumer_worker = StreamWorker(
        runtime.pipeline,
        config.queue_url,
        stream=stream,
        group=group,
        consumer=consumer,
        concurrency=concurrency,
        claim_idle_s=claim_idle_s,
        max_deliveries=max_deliveries,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        logger.info("ragtriage worker %s consuming %s (group %s)", consumer_worker.consumer, stream, group)
        try:
            await consumer_worker.run(stop)
        finally:
            await runtime.aclose()
        logger.info("ragtriage worker stopped: %s", dict(consumer_worker.counts))

    asyncio.run(main())
