"""``ragtriage collect``: an OTLP/HTTP receiver that evaluates whole traces and forwards every request."""

from __future__ import annotations

import asyncio
import logging

import typer

from ragtriage.collector.server import LOOPBACK
from ragtriage.config import Config


def collect(
    host: str = typer.Option(LOOPBACK, help="Address to listen on; 0.0.0.0 opens the receivers to the network."),
    port: int = typer.Option(4318, min=0, max=65535, help="Port (4318 is OTLP/HTTP's)."),
    grpc_port: int = typer.Option(4317, min=0, max=65535, help="OTLP/gRPC port (4317 is OTLP's); 0: no gRPC."),
    forward: str = typer.Option(
        None, help="Next hop for every request, unchanged (default PHOENIX_COLLECTOR_ENDPOINT); '' forwards nowhere."
    ),
    project: str = typer.Option(None, help="Phoenix project of the write-back (default PHOENIX_PROJECT_NAME)."),
    metrics_port: int = typer.Option(None, help="Serve Prometheus /metrics on this port (RAGTRIAGE_METRICS_HOST)."),
    token_file: str = typer.Option(
        None, help="Bearer tokens senders must present, one a line (instead of RAGTRIAGE_COLLECTOR_TOKENS)."
    ),
    tls_cert: str = typer.Option(None, help="PEM certificate: both receivers speak TLS (with --tls-key)."),
    tls_key: str = typer.Option(None, help="PEM private key of --tls-cert."),
    forward_with_own_key: bool = typer.Option(
        False, help="Forward authenticated senders' requests with PHOENIX_API_KEY (needs tokens) instead of theirs."
    ),
) -> None:
    """Receive OTLP traces (HTTP and gRPC) from any service in any language; evaluate whole traces; forward them.

    Apps (or an OpenTelemetry Collector) export to ``http://HOST:4318/v1/traces``. Spans of one trace from
    several services are joined; a trace is evaluated when its root has arrived and no span came for
    ``RAGTRIAGE_COLLECTOR_QUIET_S`` (6 s: longer than the SDKs' 5 s export batch delay). Sampling, judges,
    rules file, calibration file, budget, sinks and ``evaluate_in`` come from the same ``RAGTRIAGE_*``
    settings as ``instrument()``; with ``RAGTRIAGE_EVALUATE_IN=queue`` the samples go to ``ragtriage worker``\\ s.

    It listens on 127.0.0.1 unless ``--host`` says otherwise; off loopback, give senders tokens
    (``RAGTRIAGE_COLLECTOR_TOKENS`` or ``--token-file``) and the receivers TLS (``--tls-cert``, ``--tls-key``).

    Example::

        PHOENIX_COLLECTOR_ENDPOINT=http://phoenix:6006 RAGTRIAGE_COLLECTOR_TOKENS=s3cret \\
            ragtriage collect --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem
        # in the apps: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://ragtriage:4318/v1/traces
        #              OTEL_EXPORTER_OTLP_TRACES_HEADERS=authorization=Bearer%20s3cret
    """
    from ragtriage.collector.auth import read_token_file
    from ragtriage.collector.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        tokens = read_token_file(token_file) if token_file is not None else None
        config = Config.from_env(project_name=project, collector_tokens=tokens)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        asyncio.run(
            serve(
                config,
                host=host,
                port=port,
                forward=forward,
                metrics_port=metrics_port,
                grpc_port=grpc_port or None,
                tls_cert=tls_cert,
                tls_key=tls_key,
                forward_with_own_key=forward_with_own_key,
            )
        )
    except ValueError as exc:  # a broken rules or calibration file, a bad forward URL, a missing TLS file
        raise typer.BadParameter(str(exc)) from None
    except KeyboardInterrupt:
        pass
