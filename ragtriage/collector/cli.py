"""``ragtriage collect``: an OTLP/HTTP receiver that evaluates whole traces and forwards every request."""

from __future__ import annotations

import asyncio
import logging

import typer

from ragtriage.config import Config


def collect(
    host: str = typer.Option("0.0.0.0", help="Address to listen on."),
    port: int = typer.Option(4318, min=0, max=65535, help="Port (4318 is OTLP/HTTP's)."),
    grpc_port: int = typer.Option(4317, min=0, max=65535, help="OTLP/gRPC port (4317 is OTLP's); 0: no gRPC."),
    forward: str = typer.Option(
        None, help="Next hop for every request, unchanged (default PHOENIX_COLLECTOR_ENDPOINT); '' forwards nowhere."
    ),
    project: str = typer.Option(None, help="Phoenix project of the write-back (default PHOENIX_PROJECT_NAME)."),
    metrics_port: int = typer.Option(None, help="Serve Prometheus /metrics on this port."),
) -> None:
    """Receive OTLP traces (HTTP and gRPC) from any service in any language; evaluate whole traces; forward them.

    Apps (or an OpenTelemetry Collector) export to ``http://HOST:4318/v1/traces``. Spans of one trace from
    several services are joined; a trace is evaluated when its root has arrived and no span came for
    ``RAGTRIAGE_COLLECTOR_QUIET_S`` (6 s: longer than the SDKs' 5 s export batch delay). Sampling, judges,
    rules file, calibration file, budget, sinks and ``evaluate_in`` come from the same ``RAGTRIAGE_*``
    settings as ``instrument()``; with ``RAGTRIAGE_EVALUATE_IN=queue`` the samples go to ``ragtriage worker``\\ s.

    Example::

        PHOENIX_COLLECTOR_ENDPOINT=http://phoenix:6006 RAGTRIAGE_SAMPLE_RATE=0.1 ragtriage collect --port 4318
        # in the apps: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://ragtriage:4318/v1/traces
    """
    from ragtriage.collector.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_env(project_name=project)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        grpc = grpc_port or None
        asyncio.run(serve(config, host=host, port=port, forward=forward, metrics_port=metrics_port, grpc_port=grpc))
    except ValueError as exc:  # a broken rules or calibration file, a bad forward URL
        raise typer.BadParameter(str(exc)) from None
    except KeyboardInterrupt:
        pass
