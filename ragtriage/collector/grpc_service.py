"""OTLP/gRPC next to OTLP/HTTP: the same :meth:`Collector.ingest` behind ``TraceService/Export``.

The forwarder speaks OTLP/HTTP to the next hop, so a gRPC request is forwarded as the same message,
serialized again. Statuses follow the OTLP spec: ``UNAVAILABLE`` (retryable) under back-pressure,
``INVALID_ARGUMENT`` for a request that cannot be read.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ragtriage.collector.collector import BACKPRESSURE, Collector
from ragtriage.collector.otlp import PROTOBUF


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def Export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        # the forwarder passes on the same headers as for OTLP/HTTP (credentials), whatever the transport
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        # the message is decoded already: no content-encoding applies to its bytes
        headers = {**metadata, "content-type": PROTOBUF, "content-encoding": "identity"}
        outcome = self._collector.ingest(request.SerializeToString(), PROTOBUF, headers)
        if outcome is BACKPRESSURE:
            await context.abort(grpc.StatusCode.UNAVAILABLE, outcome)
        elif outcome is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, outcome)
        return ExportTraceServiceResponse()


async def start_grpc(collector: Collector, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """An OTLP/gRPC server on ``host:port`` (0: any free port) on the running loop; returns it and its port."""
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(collector), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise ValueError(f"cannot listen for OTLP/gRPC on {host}:{port}")
    await server.start()
    return server, bound
