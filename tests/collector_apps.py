"""Two services of one RAG app, each its own process with its own service.name, both exporting OTLP/HTTP.

    python tests/collector_apps.py retriever PORT_FILE COLLECTOR_URL
        an HTTP service: GET /search?q=... runs a RETRIEVER span under the caller's trace (W3C traceparent)
    python tests/collector_apps.py gateway RETRIEVER_URL COLLECTOR_URL QUESTION ANSWER
        the front: a CHAIN root span holding the question and the answer, calling the retriever over HTTP;
        prints {"trace_id", "root_span_id", "retriever_span_id"} as hex on stdout

Neither process sees the whole trace: only a collector that joins them can evaluate it.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

DOCUMENTS = {
    "eiffel-1": "The Eiffel Tower was completed on 31 March 1889 for the World's Fair in Paris.",
    "eiffel-2": "Gustave Eiffel's company designed and built the tower.",
}


def provider(service: str, collector: str) -> TracerProvider:
    project = os.environ.get("PHOENIX_PROJECT_NAME", "default")  # as phoenix.otel.register() sets it
    tp = TracerProvider(resource=Resource.create({"service.name": service, "openinference.project.name": project}))
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{collector}/v1/traces", timeout=5)))
    return tp


def retriever(port_file: str, collector: str) -> None:
    tp = provider("rag-retriever", collector)
    tracer = tp.get_tracer("retriever")

    class Search(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)["q"][0]
            attributes: dict[str, object] = {"openinference.span.kind": "RETRIEVER", "input.value": query}
            for i, (doc_id, text) in enumerate(DOCUMENTS.items()):
                attributes[f"retrieval.documents.{i}.document.id"] = doc_id
                attributes[f"retrieval.documents.{i}.document.content"] = text
                attributes[f"retrieval.documents.{i}.document.score"] = 0.9 - i / 10
            with tracer.start_as_current_span("search", context=extract(self.headers), attributes=attributes):
                body = json.dumps(list(DOCUMENTS.values())).encode()
            # Exported before the answer, so before the gateway's root: on a loaded machine a batch sent later
            # could miss the collector's quiet period, and the test would time the exporter, not the collector.
            tp.force_flush(10_000)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Search)
    Path(port_file).write_text(str(server.server_port))
    server.serve_forever()


def gateway(retriever_url: str, collector: str, question: str, answer: str) -> None:
    tp = provider("rag-gateway", collector)
    tracer = tp.get_tracer("gateway")
    with tracer.start_as_current_span(
        "answer", attributes={"openinference.span.kind": "CHAIN", "input.value": question}
    ) as root:
        headers: dict[str, str] = {}
        inject(headers)
        contexts = httpx.get(f"{retriever_url}/search", params={"q": question}, headers=headers).json()
        with tracer.start_as_current_span("llm", attributes={"openinference.span.kind": "LLM"}) as llm:
            llm.set_attribute("llm.input_messages.0.message.role", "user")
            llm.set_attribute("llm.input_messages.0.message.content", f"{question}\n\n{contexts}")
        root.set_attribute("output.value", answer)
    ctx = root.get_span_context()
    tp.shutdown()  # flushes the exporter
    print(json.dumps({"trace_id": f"{ctx.trace_id:032x}", "root_span_id": f"{ctx.span_id:016x}"}))


if __name__ == "__main__":
    trace.set_tracer_provider(TracerProvider())  # nothing global is used; keep the SDK quiet about it
    {"retriever": retriever, "gateway": gateway}[sys.argv[1]](*sys.argv[2:])
