"""OTLP/gRPC next to OTLP/HTTP: the same :meth:`Collector.authenticate` and :meth:`Collector.ingest` behind
``TraceService/Export``.

The forwarder speaks OTLP/HTTP to the next hop, so a gRPC request is forwarded as the same message,
serialized again, uncompressed (no ``content-encoding``: ``phoenix serve`` answers ``identity`` with 415).
Statuses follow the OTLP spec: ``UNAUTHENTICATED`` without a valid token, ``UNAVAILABLE`` (retryable)
under back-pressure, ``INVALID_ARGUMENT`` for a request that cannot be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ragtriage.collector.collector import BACKPRESSURE, UNAUTHENTICATED, Collector
from ragtriage.collector.otlp import PROTOBUF


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def Export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        # metadata is what headers are over HTTP: the token, and the credentials the forwarder may pass on
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        sender = self._collector.authenticate(metadata)
        if sender is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)
        assert sender is not None  # abort() raised
        # the message is decoded already: its bytes have no content-encoding, whatever the metadata says
        metadata.pop("content-encoding", None)
        headers = {**metadata, "content-type": PROTOBUF}
        outcome = self._collector.ingest(request.SerializeToString(), PROTOBUF, headers, sender)
        if outcome is BACKPRESSURE:
            await context.abort(grpc.StatusCode.UNAVAILABLE, outcome)
        elif outcome is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, outcome)
        return ExportTraceServiceResponse()


async def start_grpc(
    collector: Collector, host: str, port: int, *, tls: tuple[Path, Path] | None = None
) -> tuple[grpc.aio.Server, int]:
    """An OTLP/gRPC server on ``host:port`` (0: any free port) on the running loop, over TLS with
    ``tls=(certificate, key)`` (PEM files); returns it and its port."""
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(collector), server)
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        cert, key = (path.read_bytes() for path in tls)
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    if not bound:
        raise ValueError(f"cannot listen for OTLP/gRPC on {address}")
    await server.start()
    return server, bound
