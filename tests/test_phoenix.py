"""Write-back into a real `phoenix serve`: annotations and the EVALUATOR span, read back over its API."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import ragtriage
from ragtriage import RAGEvaluator
from ragtriage.export import PhoenixWriter
from ragtriage.instrumentation.instrument import installed_processor
from ragtriage.sample import Document, RAGSample
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer

pytestmark = pytest.mark.phoenix

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
DOCS = ["Paris is the capital and largest city of France.", "Bananas are yellow."]


def app_provider(phoenix: PhoenixServer, project: str) -> TracerProvider:
    """The app's own pipeline: OTLP to Phoenix, as phoenix.otel.register() would set it up."""
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces")))
    return provider


def rag_request(provider: TracerProvider, answer: str = ANSWER) -> tuple[int, int, int]:
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span(
        "rag", attributes={"openinference.span.kind": "CHAIN", "input.value": QUESTION}
    ) as root:
        attrs = {"openinference.span.kind": "RETRIEVER"}
        for i, doc in enumerate(DOCS):
            attrs[f"retrieval.documents.{i}.document.content"] = doc
        with tracer.start_as_current_span("retrieve", attributes=attrs) as retriever:
            pass
        root.set_attribute("output.value", answer)
    ctx = root.get_span_context()
    return ctx.trace_id, ctx.span_id, retriever.get_span_context().span_id


def wait_for_span(phoenix: PhoenixServer, project: str, span_id: int) -> None:
    """Phoenix ingests OTLP asynchronously: a flushed span is queryable a moment later."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = httpx.get(f"{phoenix.url}/v1/projects/{project}/spans", params={"span_id": f"{span_id:016x}"})
        if response.status_code == 200 and response.json()["data"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"span {span_id:016x} never arrived in Phoenix")


def annotations(phoenix: PhoenixServer, project: str, span_id: int) -> dict[str, dict]:
    wait_for_span(phoenix, project, span_id)
    response = httpx.get(
        f"{phoenix.url}/v1/projects/{project}/span_annotations",
        params={"span_ids": f"{span_id:016x}", "limit": 100},
    )
    response.raise_for_status()
    return {row["name"]: row for row in response.json()["data"]}


def document_evaluations(phoenix: PhoenixServer, project: str, span_id: int) -> list[dict]:
    wait_for_span(phoenix, project, span_id)
    spans = httpx.get(f"{phoenix.url}/v1/projects/{project}/spans", params={"span_id": f"{span_id:016x}"}).json()
    node_id = spans["data"][0]["id"]
    query = "query($id:ID!){node(id:$id){... on Span{documentEvaluations{name score label documentPosition}}}}"
    response = httpx.post(f"{phoenix.url}/graphql", json={"query": query, "variables": {"id": node_id}})
    return sorted(response.json()["data"]["node"]["documentEvaluations"], key=lambda d: d["documentPosition"])


@pytest.fixture
def project() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _uninstrument():
    yield
    ragtriage.uninstrument()


def test_scores_land_on_the_evaluated_span(phoenix: PhoenixServer, judge_server: JudgeServer, project: str) -> None:
    judge_server.default = Reply(
        verdict_json(
            faithfulness=0.83, relevance=0.91, answer_quality=0.5, context_recall=0.77, context_precision=0.5,
            confidence=0.95, documents=[{"index": 1, "relevance": 0.95}, {"index": 2, "relevance": 0.05}],
        )
    )  # fmt: skip
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, local_judge_url=judge_server.url,
        auto_instrument=False,
    )  # fmt: skip
    trace_id, root_id, retriever_id = rag_request(provider)
    assert provider.force_flush(30_000)

    found = annotations(phoenix, project, root_id)
    scores = {name: row["result"]["score"] for name, row in found.items()}
    assert scores == {
        "faithfulness": 0.83, "relevance": 0.91, "answer_quality": 0.5, "context_recall": 0.77,
        "context_precision": 0.5, "eval_tier": None, "answer": 0.0,  # the verdict: fail 0, pass 1
    }  # fmt: skip
    assert found["eval_tier"]["result"]["label"] == "local"
    assert found["answer"]["result"]["label"] == "fail"  # answer_quality 0.5 < 0.70
    assert found["answer_quality"]["result"]["label"] == "fail" and found["faithfulness"]["result"]["label"] == "pass"
    assert found["faithfulness"]["annotator_kind"] == "LLM"
    assert found["faithfulness"]["identifier"] == f"ragtriage:{trace_id:032x}-{root_id:016x}"

    evaluator_spans: list[dict] = []
    deadline = time.monotonic() + 20
    while not evaluator_spans and time.monotonic() < deadline:
        params = {"trace_id": f"{trace_id:032x}", "span_kind": "EVALUATOR"}
        evaluator_spans = httpx.get(f"{phoenix.url}/v1/projects/{project}/spans", params=params).json()["data"]
    assert len(evaluator_spans) == 1
    span = evaluator_spans[0]
    assert span["parent_id"] == f"{root_id:016x}"
    assert span["attributes"]["ragtriage.target_span_id"] == f"{root_id:016x}"
    assert span["attributes"]["ragtriage.tier"] == "local"
    assert span["attributes"]["annotations.0.annotation.name"] == "faithfulness"
    assert span["attributes"]["annotations.0.annotation.score"] == 0.83

    docs = document_evaluations(phoenix, project, retriever_id)
    assert [(d["documentPosition"], d["score"], d["label"]) for d in docs] == [
        (0, 0.95, "relevant"),
        (1, 0.05, "irrelevant"),
    ]
    provider.shutdown()


def test_free_tiers_write_code_annotations(phoenix: PhoenixServer, project: str) -> None:
    provider = app_provider(phoenix, project)
    ragtriage.instrument(tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False)
    _, root_id, _ = rag_request(provider, answer="Paris has been the capital since 1794.")
    assert provider.force_flush(30_000)
    found = annotations(phoenix, project, root_id)
    # a year no context states: the certain evidence implies the answer is not faithful to them. The free tiers only
    # ever fail, so the verdict is labelled, not scored, and carries the implied score (no annotation of its own)
    assert set(found) == {"eval_tier", "answer"}
    assert found["answer"]["result"]["label"] == "fail" and found["answer"]["result"]["score"] is None
    assert found["answer"]["metadata"]["implied_scores"] == {"faithfulness": 0.0}
    explanation = found["answer"]["result"]["explanation"]
    assert explanation.startswith("certain (unsupported_number): answer states '1794'")  # what decided, first
    assert found["answer"]["annotator_kind"] == "CODE"
    assert re.search(r"faithfulness by tier: grounding 0\.\d\d$", found["eval_tier"]["result"]["explanation"])
    provider.shutdown()


def test_contexts_set_by_hand_are_judged_without_document_annotations(
    phoenix: PhoenixServer, judge_server: JudgeServer, project: str
) -> None:
    """``ragtriage.contexts`` on a plain span (the README's "without OpenInference"): Phoenix holds no documents
    there, and refuses a ``document_relevance`` annotation on one; the judge's verdict still lands, nothing fails."""
    judge_server.default = Reply(verdict_json(confidence=0.95, documents=[{"index": 1, "relevance": 0.9}]))
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, local_judge_url=judge_server.url,
        auto_instrument=False,
    )  # fmt: skip
    with provider.get_tracer("app").start_as_current_span("rag") as root:
        root.set_attribute("ragtriage.question", QUESTION)
        root.set_attribute("ragtriage.contexts", DOCS[:1])
        root.set_attribute("ragtriage.answer", ANSWER)
    assert provider.force_flush(30_000)
    found = annotations(phoenix, project, root.get_span_context().span_id)
    assert found["eval_tier"]["result"]["label"] == "local" and found["answer"]["result"]["label"] == "pass"
    processor = installed_processor()
    assert processor is not None and processor.stats["evaluations_ok"] == 1
    assert processor.stats.get("write_back_failed", 0) == 0
    provider.shutdown()


def test_a_worker_knows_which_contexts_phoenix_holds() -> None:
    """The queue line carries it, so ``ragtriage worker`` does not send what Phoenix refuses either."""
    sample = RAGSample(
        1, 2, "q", "a", [Document("by hand", span_id=2, in_phoenix=False), Document("retrieved", span_id=3)]
    )
    back = RAGSample.from_json(sample.to_json())
    assert [d.in_phoenix for d in back.documents] == [False, True]
    old = json.loads(sample.to_json())
    for document in old["documents"]:
        del document["in_phoenix"]
    assert [d.in_phoenix for d in RAGSample.from_json(json.dumps(old)).documents] == [True, True]  # older lines


def test_unsampled_traces_get_nothing(phoenix: PhoenixServer, project: str) -> None:
    provider = app_provider(phoenix, project)
    ragtriage.instrument(tracer_provider=provider, endpoint=phoenix.url, sample_rate=0.0, auto_instrument=False)
    _, root_id, _ = rag_request(provider)
    assert provider.force_flush(30_000)
    assert annotations(phoenix, project, root_id) == {}
    processor = installed_processor()
    assert processor is not None and processor.stats["traces_not_sampled"] == 1
    provider.shutdown()


def test_redelivery_does_not_duplicate(phoenix: PhoenixServer, project: str) -> None:
    provider = app_provider(phoenix, project)
    results = []
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False,
        on_result=lambda sample, result: results.append((sample, result)),
    )  # fmt: skip
    _, root_id, _ = rag_request(provider)
    assert provider.force_flush(30_000)
    sample, result = results[0]
    writer = PhoenixWriter(endpoint=phoenix.url, project_name=project)

    async def again() -> None:
        await writer.write(sample, result)
        await writer.aclose()

    asyncio.run(again())
    rows = httpx.get(
        f"{phoenix.url}/v1/projects/{project}/span_annotations", params={"span_ids": f"{root_id:016x}", "limit": 100}
    ).json()["data"]
    assert sorted(r["name"] for r in rows) == ["answer", "eval_tier"]
    provider.shutdown()


def test_phoenix_unreachable_is_counted_and_harmless(judge_server: JudgeServer) -> None:
    from ragtriage.testing.redis_server import free_port

    provider = TracerProvider()
    dead = f"http://127.0.0.1:{free_port()}"
    writer = PhoenixWriter(endpoint=dead, project_name="p", max_retries=1, timeout_s=0.5)
    evaluator = RAGEvaluator(sample_rate=1.0)
    ragtriage.instrument(tracer_provider=provider, evaluator=evaluator, writer=writer, auto_instrument=False)
    rag_request(provider)  # the app's request completes normally
    assert provider.force_flush(60_000)
    processor = installed_processor()
    assert processor is not None
    assert processor.stats["write_back_failed"] == 1 and processor.stats["evaluations_ok"] == 1
    assert writer.counts["writes_dropped"] == 1
    provider.shutdown()
