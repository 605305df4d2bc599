"""OTLP/HTTP trace requests: protobuf or JSON, gzip or not, to the few span fields the collector needs.

Decoding is lazy where it can be: every span's ids are read (sampling is by trace id), but a span's
attributes are turned into a dict only for sampled traces (``wanted(trace_id)``), so the collector pays
for attribute conversion on the sampled share of the traffic only.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ragtriage.errors import OTLPError

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: What one request may unpack to: a gzip bomb is a 400, not an out-of-memory.
MAX_DECODED_BYTES = 64 * 1024 * 1024
_EMPTY_RESPONSE = {PROTOBUF: ExportTraceServiceResponse().SerializeToString(), JSON: b"{}"}


@dataclass(slots=True)
class ReceivedSpan:
    trace_id: int
    span_id: int
    parent_span_id: int  # 0: a global root
    attributes: dict[str, Any] | None  # None: not decoded (the trace is not sampled)
    start_ns: int = 0  # ns since the epoch; 0: not sent
    end_ns: int = 0


def media_type(content_type: str | None) -> str:
    """The request's format; raises :class:`OTLPError` for one OTLP/HTTP does not define."""
    kind = (content_type or PROTOBUF).split(";", 1)[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise OTLPError(f"unsupported content type {content_type!r}: OTLP/HTTP is {PROTOBUF} or {JSON}")
    return kind


def empty_response(kind: str) -> bytes:
    """The success body, in the request's format."""
    return _EMPTY_RESPONSE[kind]


def decoded_body(body: bytes, encoding: str | None) -> bytes:
    """The body without its ``Content-Encoding`` (gzip or deflate), bounded by :data:`MAX_DECODED_BYTES`."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise OTLPError(f"unsupported content encoding {encoding!r}: use gzip or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, MAX_DECODED_BYTES + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise OTLPError(f"body is not valid {encoding}: {exc}") from None
    if len(out) > MAX_DECODED_BYTES or inflater.unconsumed_tail:
        raise OTLPError(f"body unpacks to more than {MAX_DECODED_BYTES} bytes")
    return out


def spans(body: bytes, kind: str, wanted: Callable[[int], bool]) -> list[ReceivedSpan]:
    """The spans of one export request; attributes only for spans whose trace id is ``wanted``."""
    return list(_protobuf_spans(body, wanted) if kind == PROTOBUF else _json_spans(body, wanted))


def _protobuf_spans(body: bytes, wanted: Callable[[int], bool]) -> Iterator[ReceivedSpan]:
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise OTLPError(f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id = _id(span.trace_id, 16, "traceId")
                yield ReceivedSpan(
                    trace_id,
                    _id(span.span_id, 8, "spanId"),
                    int.from_bytes(span.parent_span_id, "big") if span.parent_span_id else 0,
                    {kv.key: _any_value(kv.value) for kv in span.attributes} if wanted(trace_id) else None,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                )


def _id(raw: bytes, size: int, name: str) -> int:
    if len(raw) != size:
        raise OTLPError(f"a span's {name} must be {size} bytes, got {len(raw)}")
    value = int.from_bytes(raw, "big")
    if not value:
        raise OTLPError(f"a span's {name} is all zeros")
    return value


def _any_value(value: Any) -> Any:
    field = value.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return tuple(_any_value(v) for v in value.array_value.values)
    if field == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, field)


def _json_spans(body: bytes, wanted: Callable[[int], bool]) -> Iterator[ReceivedSpan]:
    """OTLP/JSON: ids are hex strings, 64-bit ints may be strings, field names lowerCamelCase."""
    try:
        request = json.loads(body)
        for resource_spans in request.get("resourceSpans") or ():
            for scope_spans in resource_spans.get("scopeSpans") or ():
                for span in scope_spans.get("spans") or ():
                    trace_id = _hex_id(span.get("traceId"), 32, "traceId")
                    parent = span.get("parentSpanId") or ""
                    yield ReceivedSpan(
                        trace_id,
                        _hex_id(span.get("spanId"), 16, "spanId"),
                        _hex_id(parent, 16, "parentSpanId") if parent else 0,
                        {kv["key"]: _json_value(kv.get("value") or {}) for kv in span.get("attributes") or ()}
                        if wanted(trace_id)
                        else None,
                        int(span.get("startTimeUnixNano") or 0),
                        int(span.get("endTimeUnixNano") or 0),
                    )
    except OTLPError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise OTLPError(f"body is not OTLP/JSON: {type(exc).__name__}: {exc}") from None


def _hex_id(text: Any, size: int, name: str) -> int:
    if not isinstance(text, str) or len(text) != size:
        raise OTLPError(f"a span's {name} must be {size} hex digits, got {text!r}")
    value = int(text, 16)
    if not value:
        raise OTLPError(f"a span's {name} is all zeros")
    return value


def _json_value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return tuple(_json_value(v) for v in value["arrayValue"].get("values") or ())
    if "kvlistValue" in value:
        return {kv["key"]: _json_value(kv.get("value") or {}) for kv in value["kvlistValue"].get("values") or ()}
    if "bytesValue" in value:
        return value["bytesValue"]
    return None
