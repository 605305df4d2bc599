"""An app replica for the scale-out tests: N traced RAG requests, samples queued to Redis.

    python tests/stream_producer.py REDIS_URL PHOENIX_URL PROJECT N TAG
Prints the root span ids (hex) of its traces as JSON.
"""

from __future__ import annotations

import json
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import ragtriage


def main(queue: str, phoenix: str, project: str, n: int, tag: str) -> None:
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix}/v1/traces")))
    ragtriage.instrument(
        tracer_provider=provider, evaluate_in="queue", queue_url=queue, sample_rate=1.0, auto_instrument=False
    )
    tracer = provider.get_tracer("producer")
    roots = []
    for i in range(n):
        question = f"What is the capital of France? ({tag} #{i})"
        with tracer.start_as_current_span(
            "rag", attributes={"openinference.span.kind": "CHAIN", "input.value": question}
        ) as root:
            with tracer.start_as_current_span(
                "retrieve",
                attributes={
                    "openinference.span.kind": "RETRIEVER",
                    "retrieval.documents.0.document.content": "Paris is the capital of France.",
                },
            ):
                pass
            root.set_attribute("output.value", "Paris is the capital of France.")
        roots.append(f"{root.get_span_context().span_id:016x}")
    assert provider.force_flush(60_000)
    processor = ragtriage.instrumentation.installed_processor()
    assert processor is not None and processor.stats.get("queue_published") == n, processor.stats
    ragtriage.uninstrument()
    provider.shutdown()
    print(json.dumps(roots))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
