"""``ragtriage worker``: evaluate samples from the Redis Stream until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from ragtriage.alerts import AlertManager, default_rules, load_rules, sinks_from_env
from ragtriage.config import Config
from ragtriage.export.phoenix import base_url
from ragtriage.instrumentation.instrument import build_evaluator, phoenix_writer
from ragtriage.span_processor.processor import EvalSpanProcessor
from ragtriage.streams.queue import DEFAULT_GROUP, DEFAULT_STREAM
from ragtriage.streams.shared_alerts import SharedAlerts
from ragtriage.streams.worker import StreamWorker

logger = logging.getLogger(__name__)


def worker(
    queue: str = typer.Option(..., envvar="RAGTRIAGE_QUEUE_URL", help="redis://host:port/db of the sample stream."),
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
    """Consume the sample queue: evaluate, write back to Phoenix, alert fleet-wide, acknowledge."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpx2", "httpcore", "openai"):  # one line per judge call would cost CPU and fill pipes
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # The producers sampled already: evaluate every sample that reaches the queue.
    config = Config.from_env(endpoint=endpoint, project_name=project, sample_rate=1.0)
    evaluator = build_evaluator(config, alert_sinks=())
    rules = (
        load_rules(config.alert_rules_file, cost_tracker=evaluator.cost_tracker)
        if config.alert_rules_file
        else default_rules(evaluator.thresholds)
    )
    alerts = AlertManager(rules, sinks_from_env(), project=config.project_name, phoenix_url=base_url(config.endpoint))
    shared = SharedAlerts(alerts, queue)
    evaluator.add_observer(shared.observe)
    writer = phoenix_writer(config)
    processor = EvalSpanProcessor(evaluator, writer=writer)  # never attached: its evaluate_and_write is the shared path
    if metrics_port is not None:
        from ragtriage.dashboards import enable_metrics, serve_metrics

        metrics = enable_metrics(
            evaluator, processor=processor, meter_provider=serve_metrics(metrics_port).meter_provider
        )
        alerts.add_listener(lambda event: metrics.record_alert(event.rule, event.severity))
    consumer_worker = StreamWorker(
        processor,
        queue,
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
            await shared.aclose()
            await evaluator.aclose()
            if writer is not None:
                await writer.aclose()
        logger.info("ragtriage worker stopped: %s", dict(consumer_worker.counts))

    asyncio.run(main())
