"""Build and run a collector from a :class:`~ragtriage.config.Config` (``ragtriage collect``)."""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from ragtriage._log_hygiene import redact
from ragtriage.collector.assembly import TraceAssembler
from ragtriage.collector.auth import TokenAuth
from ragtriage.collector.collector import Collector
from ragtriage.collector.forwarder import Forwarder
from ragtriage.collector.sender_cap import SenderCap
from ragtriage.config import Config
from ragtriage.export.phoenix import base_url
from ragtriage.runtime import Runtime, build

logger = logging.getLogger(__name__)

#: Where the receivers listen unless told otherwise: only this host's processes can send.
LOOPBACK = "127.0.0.1"


def build_collector(
    config: Config, *, forward: str | None = None, forward_with_own_key: bool = False
) -> tuple[Collector, Runtime]:
    """The collector ``config`` describes, and the runtime (pipeline, alerts) behind it.

    ``forward`` is the next hop (default: ``config.endpoint``, Phoenix); ``""`` forwards nowhere. Requests are
    forwarded with the credentials they came with; ``forward_with_own_key`` (only with
    ``config.collector_tokens``) forwards authenticated requests with ``config.phoenix_api_key`` instead.
    """
    auth = TokenAuth(config.collector_tokens or ())
    if forward_with_own_key and not config.phoenix_api_key:
        raise ValueError("forward_with_own_key (--forward-with-own-key) needs PHOENIX_API_KEY, the key to forward with")
    target = config.endpoint if forward is None else forward
    forwarder = None
    if target:
        forwarder = Forwarder(
            base_url(target) + "/v1/traces",
            max_buffer_bytes=config.forward_buffer_mb * 1024 * 1024,
            receiver_auth=auth.enabled,
            own_key=config.phoenix_api_key if forward_with_own_key else None,
        )
    runtime = build(config, "collector")  # after every argument was checked: nothing of it is left open
    assembler = TraceAssembler(
        sample_rate=config.sample_rate,
        quiet_s=config.collector_quiet_s,
        ttl_s=config.trace_ttl_s,
        max_traces=config.max_traces_in_flight,
        max_spans_per_trace=config.max_spans_per_trace,
        sender_cap=SenderCap(config.collector_traces_per_minute),
    )
    collector = Collector(
        runtime.handler,
        forwarder,
        assembler,
        auth=auth,
        max_queue_size=config.max_queue_size,
        max_concurrency=config.max_concurrency,
    )
    runtime.drops.bind(collector)
    return collector, runtime


async def serve(
    config: Config,
    *,
    host: str = LOOPBACK,
    port: int = 4318,
    forward: str | None = None,
    metrics_port: int | None = None,
    grpc_port: int | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    forward_with_own_key: bool = False,
) -> None:
    """Receive OTLP/HTTP on ``host:port`` (and OTLP/gRPC on ``grpc_port``) until cancelled or SIGTERM;
    both over TLS with ``tls_cert`` and ``tls_key`` (PEM files)."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("ragtriage collect needs the collector extra: pip install 'ragtriage[collector]'") from exc

    tls = _tls_files(tls_cert, tls_key)
    collector, runtime = build_collector(config, forward=forward, forward_with_own_key=forward_with_own_key)
    if metrics_port is not None:
        runtime.start_metrics(processor=collector, port=metrics_port)
    ssl: dict[str, Any] = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    http = uvicorn.Config(collector, host=host, port=port, lifespan="on", log_level="warning", access_log=False, **ssl)
    server = uvicorn.Server(http)
    sockets = [http.bind_socket()]
    sockets[0].listen(http.backlog)  # listening before the announcement says so
    # uvicorn stops on SIGTERM/SIGINT, then raises the signal again for the handler it found: make that one a
    # no-op, so the alerts are flushed and the counts logged after the server's own (lifespan) shutdown.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    grpc_server, grpc_bound = None, None
    if grpc_port is not None:
        from ragtriage.collector.grpc_service import start_grpc

        grpc_server, grpc_bound = await start_grpc(collector, host, grpc_port, tls=tls)
    _announce(collector, config, host, sockets[0].getsockname()[1], grpc_bound, tls is not None)
    try:
        await server.serve(sockets=sockets)  # its lifespan shutdown evaluates what is buffered and closes the pipeline
    finally:
        if grpc_server is not None:
            await grpc_server.stop(5)
        if runtime.alerts is not None:
            await runtime.alerts.aclose()
        runtime.stop_metrics()
        logger.info("ragtriage collect stopped: %s", json.dumps(collector.stats, sort_keys=True))
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _tls_files(cert: str | Path | None, key: str | Path | None) -> tuple[Path, Path] | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("tls_cert and tls_key (--tls-cert, --tls-key) go together")
    for name, path in (("tls_cert", cert), ("tls_key", key)):
        if not Path(path).is_file():
            raise ValueError(f"{name} {str(path)!r} is not a readable file")
    return Path(cert), Path(key)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _announce(collector: Collector, config: Config, host: str, port: int, grpc_port: int | None, tls: bool) -> None:
    """Two lines at start: where it listens and who may send; where it forwards, with which credentials."""
    scheme = "https" if tls else "http"
    grpc = f", OTLP/gRPC {host}:{grpc_port}" if grpc_port is not None else ""
    who = "bearer token required" if collector.auth.enabled else "no authentication"
    cap = config.collector_traces_per_minute
    logger.info(
        "ragtriage collect: listening on OTLP/HTTP %s://%s:%d/v1/traces%s (%s, %s%s)",
        scheme, host, port, grpc, "TLS" if tls else "no TLS", who,
        f", {cap} judged traces a minute per sender" if cap else "",
    )  # fmt: skip
    forwarder = collector.forwarder
    if forwarder is None:
        logger.info("ragtriage collect: forwarding nowhere")
    else:
        credentials = "the collector's own key" if forwarder.uses_own_key else "the senders' own credentials"
        logger.info("ragtriage collect: forwarding to %s with %s", redact(forwarder.url), credentials)
    if not collector.auth.enabled and not _is_loopback(host):
        logger.warning(
            "ragtriage collect: listening on %s without authentication: anyone who can reach it can send spans "
            "and spend the judge budget. Set RAGTRIAGE_COLLECTOR_TOKENS or --token-file (see docs/collector.md)",
            host,
        )


def _ignore(signum: int, frame: object) -> None:
    return None
