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
#: The Config fields this command's options set.
_OPTION_OF = {"queue_url": "--queue", "endpoint": "--endpoint", "project_name": "--project"}


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
    except ValueError as exc:  # a bad option, or no queue URL at all: say which option, exit 2
        option = next((o for name, o in _OPTION_OF.items() if str(exc).startswith(f"{name} ")), None)
        if option is None:
            raise typer.BadParameter(
                "not given: the Redis Stream to consume, e.g. --queue redis://redis:6379/0 (or RAGTRIAGE_QUEUE_URL)",
                param_hint="'--queue'",
            ) from None
        raise typer.BadParameter(str(exc), param_hint=f"'{option}'") from None
    runtime = build(config, "worker")
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
