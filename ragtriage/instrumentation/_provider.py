"""The app's TracerProvider as ``phoenix.otel.register()`` (or the plain SDK) built it: where its spans go, and how
to add a processor without taking anything away.

``phoenix.otel.TracerProvider.add_span_processor`` shuts down and removes register()'s default exporter unless it is
called with ``replace_default_processor=False``: that keyword is its public API, so it is used when the provider's
method takes it. Where the spans go has no public API in the OTel SDK or phoenix-otel: the exporter behind a
processor is read the way phoenix-otel's own ``_tracing_details()`` reads it (``span_exporter``, or
``_batch_processor._exporter`` since opentelemetry-sdk 1.34), and never written.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

logger = logging.getLogger(__name__)
#: Headers the OTLP/HTTP exporter sets itself: not the app's to inherit.
_EXPORTER_OWN_HEADERS = frozenset({"content-type", "content-encoding", "user-agent"})


@dataclass(frozen=True)
class ExportTarget:
    """Where the app's spans are exported: the Phoenix base URL (``None`` when it cannot be known: gRPC) and the
    headers sent with them, the API key (``authorization: Bearer ...``) apart."""

    endpoint: str | None
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def processors(provider: TracerProvider) -> tuple[SpanProcessor, ...]:
    """The provider's span processors: the SDK has no public accessor, so its composite processor's tuple is read."""
    return tuple(getattr(provider._active_span_processor, "_span_processors", ()))


def add_processor(provider: TracerProvider, processor: SpanProcessor) -> None:
    """Add ``processor`` next to the provider's own, replacing none (phoenix.otel's default exporter included)."""
    if "replace_default_processor" in inspect.signature(provider.add_span_processor).parameters:
        # phoenix.otel.TracerProvider's keyword, not the SDK's: the signature was checked just above
        provider.add_span_processor(processor, replace_default_processor=False)  # type: ignore[call-arg]
    else:
        provider.add_span_processor(processor)


def flush_others(provider: TracerProvider, keep: SpanProcessor, timeout_ms: int) -> None:
    """Flush every processor of the provider but ``keep``, all within ``timeout_ms``; never raises."""
    deadline = time.monotonic() + timeout_ms / 1000
    for processor in processors(provider):
        left_ms = int((deadline - time.monotonic()) * 1000)
        if processor is keep or left_ms <= 0:
            continue
        try:
            processor.force_flush(left_ms)
        except Exception:  # an exporter's failure is the app's to see in its own logs
            logger.debug("ragtriage: flushing the app's span processor %r failed", processor, exc_info=True)


def export_target(provider: TracerProvider) -> ExportTarget | None:
    """Where the provider's OTLP exporter sends spans: register()'s default processor first, else the first OTLP
    exporter found; ``None`` without one."""
    candidates = [getattr(provider, "_default_processor", None), *processors(provider)]
    for processor in candidates:
        exporter = _exporter(processor)
        if not any(c.__module__.startswith("opentelemetry.exporter.otlp.") for c in type(exporter).__mro__):
            continue  # no exporter, or one that does not send OTLP (console, in-memory, ...)
        headers = {str(k).lower(): str(v) for k, v in _headers(exporter).items()}
        headers = {k: v for k, v in headers.items() if k not in _EXPORTER_OWN_HEADERS}
        api_key = None
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            api_key = authorization[7:].strip() or None
            del headers["authorization"]
        endpoint = str(exporter._endpoint) if isinstance(exporter, HTTPExporter) else None
        return ExportTarget(endpoint, api_key, headers)
    return None


def _exporter(processor: Any) -> Any:
    if processor is None:
        return None
    return getattr(processor, "span_exporter", None) or getattr(
        getattr(processor, "_batch_processor", None), "_exporter", None
    )


def _headers(exporter: Any) -> dict[Any, Any]:
    # OTLP/HTTP keeps them on its client (opentelemetry-exporter-otlp-proto-http 1.4x), earlier on the exporter;
    # OTLP/gRPC as a dict or a tuple of pairs.
    raw = getattr(getattr(exporter, "_client", None), "_headers", None) or getattr(exporter, "_headers", None)
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list | tuple):
        return dict(raw)
    return {}
