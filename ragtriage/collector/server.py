"""Build and run a collector from a :class:`~ragtriage.config.Config` (``ragtriage collect``)."""

from __future__ import annotations

import json
import logging
import signal
import threading

from ragtriage.collector.assembly import TraceAssembler
from ragtriage.collector.collector import Collector
from ragtriage.collector.forwarder import Forwarder
from ragtriage.config import Config
from ragtriage.export.phoenix import base_url
from ragtriage.runtime import Runtime, build

logger = logging.getLogger(__name__)


def build_collector(config: Config, *, forward: str | None = None) -> tuple[Collector, Runtime]:
    """The collector ``config`` describes, and the runtime (pipeline, alerts) behind it.

    ``forward`` is the next hop (default: ``config.endpoint``, Phoenix); ``""`` forwards nowhere.
    """
    runtime = build(config, "collector")
    target = config.endpoint if forward is None else forward
    forwarder = None
    if target:
        headers = {"api_key": config.phoenix_api_key} if config.phoenix_api_key and forward is None else None
        forwarder = Forwarder(
            base_url(target) + "/v1/traces", max_buffer_bytes=config.forward_buffer_mb * 1024 * 1024, headers=headers
        )
    assembler = TraceAssembler(
        sample_rate=config.sample_rate,
        quiet_s=config.collector_quiet_s,
        ttl_s=config.trace_ttl_s,
        max_traces=config.max_traces_in_flight,
        max_spans_per_trace=config.max_spans_per_trace,
    )
    collector = Collector(
        runtime.handler,
        forwarder,
        assembler,
        max_queue_size=config.max_queue_size,
        max_concurrency=config.max_concurrency,
    )
    runtime.drops.bind(collector)
    return collector, runtime


async def serve(
    config: Config,
    *,
    host: str = "0.0.0.0",
    port: int = 4318,
    forward: str | None = None,
    metrics_port: int | None = None,
    grpc_port: int | None = None,
) -> None:
    """Receive OTLP/HTTP on ``host:port`` (and OTLP/gRPC on ``grpc_port``) until cancelled or SIGTERM."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("ragtriage collect needs the collector extra: pip install 'ragtriage[collector]'") from exc

    collector, runtime = build_collector(config, forward=forward)
    if metrics_port is not None:
        runtime.start_metrics(processor=collector, port=metrics_port)
    server = uvicorn.Server(
        uvicorn.Config(collector, host=host, port=port, lifespan="on", log_level="warning", access_log=False)
    )
    # uvicorn stops on SIGTERM/SIGINT, then raises the signal again for the handler it found: make that one a
    # no-op, so the alerts are flushed and the counts logged after the server's own (lifespan) shutdown.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    grpc_server = None
    if grpc_port is not None:
        from ragtriage.collector.grpc_service import start_grpc

        grpc_server, bound = await start_grpc(collector, host, grpc_port)
        logger.info("ragtriage collect: OTLP/gRPC on %s:%d", host, bound)
    try:
        await server.serve()  # its lifespan shutdown evaluates what is buffered and closes the pipeline
    finally:
        if grpc_server is not None:
            await grpc_server.stop(5)
        if runtime.alerts is not None:
            await runtime.alerts.aclose()
        runtime.stop_metrics()
        logger.info("ragtriage collect stopped: %s", json.dumps(collector.stats, sort_keys=True))
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore(signum: int, frame: object) -> None:
    return None
