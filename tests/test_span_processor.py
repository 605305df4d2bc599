"""EvalSpanProcessor on a real TracerProvider: extraction, sampling, bounds, isolation, fork."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from ragtriage import EvalSpanProcessor, LLMJudge, RAGEvaluator
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.pipeline import Pipeline
from ragtriage.sample import RAGSample
from ragtriage.testing import JudgeServer, Reply, verdict_json

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
DOCS = ["Paris is the capital and largest city of France.", "Lyon is in France."]


class ListWriter:
    """The write-back plug-in point, keeping what it is given (Phoenix itself is tested in test_phoenix)."""

    def __init__(self, fail: bool = False) -> None:
        self.items: list[tuple[RAGSample, RAGEvaluationResult]] = []
        self.fail = fail

    async def write(self, sample: RAGSample, result: RAGEvaluationResult) -> None:
        if self.fail:
            raise ConnectionError("phoenix down")
        self.items.append((sample, result))

    async def aclose(self) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    tp = TracerProvider()
    yield tp
    tp.shutdown()


def attach(provider: TracerProvider, evaluator: RAGEvaluator | None = None, **kwargs: object):
    writer = kwargs.pop("writer", None) or ListWriter()
    evaluator = evaluator or RAGEvaluator(sample_rate=1.0)
    pipeline = Pipeline(evaluator, writer=writer, on_result=kwargs.pop("on_result", None))  # type: ignore[arg-type]
    processor = EvalSpanProcessor(pipeline, sample_rate=evaluator.sample_rate, **kwargs)  # type: ignore[arg-type]
    provider.add_span_processor(processor)
    return processor, writer


def rag_request(provider: TracerProvider, question: str = QUESTION, answer: str = ANSWER, docs=DOCS) -> int:
    """What an OpenInference-instrumented RAG app emits: CHAIN root, RETRIEVER, LLM."""
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span(
        "rag", attributes={"openinference.span.kind": "CHAIN", "input.value": question}
    ) as root:
        attrs = {"openinference.span.kind": "RETRIEVER", "input.value": question}
        for i, doc in enumerate(docs):
            attrs[f"retrieval.documents.{i}.document.content"] = doc
            attrs[f"retrieval.documents.{i}.document.id"] = f"doc-{i}"
            attrs[f"retrieval.documents.{i}.document.score"] = 1.0 - i / 10
        with tracer.start_as_current_span("retrieve", attributes=attrs):
            pass
        with tracer.start_as_current_span("llm", attributes={"openinference.span.kind": "LLM"}):
            pass
        root.set_attribute("output.value", answer)
        return root.get_span_context().trace_id


def test_a_sampled_rag_trace_is_evaluated(provider: TracerProvider, judge_server: JudgeServer) -> None:
    judge_server.default = Reply(
        verdict_json(documents=[{"index": 1, "relevance": 1.0}, {"index": 2, "relevance": 0.0}])
    )
    evaluator = RAGEvaluator(sample_rate=1.0, local_judge=LLMJudge(model="m", base_url=judge_server.url))
    processor, writer = attach(provider, evaluator)
    trace_id = rag_request(provider)
    assert processor.force_flush(10_000)
    [(sample, result)] = writer.items
    assert (sample.question, sample.answer, sample.contexts) == (QUESTION, ANSWER, DOCS)
    assert sample.trace_id == trace_id
    assert [(d.id, d.score, d.position) for d in sample.documents] == [("doc-0", 1.0, 0), ("doc-1", 0.9, 1)]
    assert result.tier == "local" and result.document_relevance == [1.0, 0.0]
    assert result.sample_key == f"{trace_id:032x}"
    assert processor.stats["evaluations_ok"] == 1


def test_llm_span_fallbacks(provider: TracerProvider) -> None:
    processor, writer = attach(provider)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("agent"):  # a root with no input/output
        with tracer.start_as_current_span(
            "retrieve",
            attributes={"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.content": DOCS[0]},
        ):
            pass
        with tracer.start_as_current_span(
            "llm",
            attributes={
                "openinference.span.kind": "LLM",
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "Answer from the documents.",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": QUESTION,
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": ANSWER,
            },
        ):
            pass
    assert processor.force_flush(10_000)
    [(sample, _)] = writer.items
    assert (sample.question, sample.answer, sample.contexts) == (QUESTION, ANSWER, DOCS[:1])


def test_json_root_input_and_ragtriage_attributes(provider: TracerProvider) -> None:
    processor, writer = attach(provider)
    tracer = provider.get_tracer("app")
    with (
        tracer.start_as_current_span(
            "rag",
            attributes={"input.value": json.dumps({"query": QUESTION, "k": 3}), "input.mime_type": "application/json"},
        ),
        tracer.start_as_current_span("my-step", attributes={"ragtriage.contexts": DOCS, "ragtriage.answer": ANSWER}),
    ):
        pass
    assert processor.force_flush(10_000)
    [(sample, _)] = writer.items
    assert (sample.question, sample.answer, sample.contexts) == (QUESTION, ANSWER, DOCS)


def test_traces_without_retrieval_or_answer_are_ignored_and_counted(provider: TracerProvider) -> None:
    processor, writer = attach(provider)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("healthcheck", attributes={"input.value": "ping", "output.value": "pong"}):
        pass
    retriever = {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.content": "x"}
    with (
        tracer.start_as_current_span("rag", attributes={"input.value": QUESTION}),  # no output recorded
        tracer.start_as_current_span("r", attributes=retriever),
    ):
        pass
    assert processor.force_flush(5_000)
    assert writer.items == []
    stats = processor.stats
    assert stats["traces_skipped_no_retrieval"] == 1 and stats["traces_skipped_no_answer"] == 1


def test_two_local_roots_of_one_trace_become_two_samples(provider: TracerProvider) -> None:
    """The service is called twice within one distributed trace, the calls overlapping: each call is judged on
    its own question, contexts and answer, never on a mix of the two."""
    processor, writer = attach(provider)
    tracer = provider.get_tracer("app")
    remote = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0xABC, 0x123, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
        )
    )
    calls = {"first": ("Who wrote Hamlet?", "Shakespeare wrote Hamlet.", "Hamlet is a play by Shakespeare."),
             "second": ("What is the capital of France?", ANSWER, DOCS[0])}  # fmt: skip
    roots = {
        name: tracer.start_span(name, context=remote, attributes={"openinference.span.kind": "CHAIN",
                                                                  "input.value": question})
        for name, (question, _, _) in calls.items()
    }  # fmt: skip
    for name in ("second", "first"):  # interleaved: each retrieval ends while both calls are open
        retriever = tracer.start_span(
            "retrieve",
            context=trace.set_span_in_context(roots[name]),
            attributes={"openinference.span.kind": "RETRIEVER",
                        "retrieval.documents.0.document.content": calls[name][2]},
        )  # fmt: skip
        retriever.end()
    for name in ("first", "second"):
        roots[name].set_attribute("output.value", calls[name][1])
        roots[name].end()
        if name == "first":
            assert processor.force_flush(1_000) and writer.items == []  # the second call is still running
    assert processor.force_flush(10_000)
    judged = {sample.root_span_id: sample for sample, _ in writer.items}
    assert len(judged) == 2 and processor.stats["traces_sampled"] == 1
    for name, (question, answer, context) in calls.items():
        sample = judged[roots[name].get_span_context().span_id]
        assert (sample.question, sample.answer, sample.contexts) == (question, answer, [context])


def test_sampling_is_per_trace_and_follows_trace_id_ratio(provider: TracerProvider) -> None:
    processor, writer = attach(provider, RAGEvaluator(sample_rate=0.25, cache=False), max_queue_size=4096)
    trace_ids = [rag_request(provider, answer=ANSWER) for _ in range(1200)]
    assert processor.force_flush(60_000)
    evaluated = {s.trace_id for s, _ in writer.items}
    expected = {
        t
        for t in trace_ids
        if TraceIdRatioBased(0.25).should_sample(None, t, "x").decision == Decision.RECORD_AND_SAMPLE
    }
    assert evaluated == expected  # every service using the same rate agrees
    # binomial sd = sqrt(1200 * .25 * .75) = 15: 4 sd
    assert abs(len(evaluated) - 300) < 60
    assert processor.stats["traces_not_sampled"] == 1200 - len(evaluated)


def test_unsampled_traces_get_nothing(provider: TracerProvider) -> None:
    processor, writer = attach(provider, RAGEvaluator(sample_rate=0.0))
    for _ in range(20):
        rag_request(provider)
    assert processor.force_flush(1_000)
    assert writer.items == [] and processor.stats["traces_not_sampled"] == 20
    assert processor.stats["traces_in_flight"] == 0


def test_a_hung_judge_does_not_hold_up_the_app(provider: TracerProvider, judge_server: JudgeServer) -> None:
    gate = threading.Event()
    judge_server.default = Reply(verdict_json(), block=gate)
    evaluator = RAGEvaluator(sample_rate=1.0, local_judge=LLMJudge(model="m", base_url=judge_server.url, timeout_s=60))
    processor, writer = attach(provider, evaluator, max_concurrency=2)
    try:
        for _ in range(5):
            rag_request(provider)  # returns although every evaluation is stuck in the judge
        while len(judge_server.requests) < 2:
            threading.Event().wait(0.01)
        assert judge_server.in_flight == 2 and writer.items == []
        assert processor.force_flush(200) is False  # flush reports the truth instead of hanging
        assert processor.stats["queue_size"] >= 2  # one more may be taken, waiting for a slot
    finally:
        gate.set()
    assert processor.force_flush(30_000)
    assert len(writer.items) == 5


def test_queue_overflow_is_dropped_and_counted(provider: TracerProvider, judge_server: JudgeServer) -> None:
    gate = threading.Event()
    judge_server.default = Reply(verdict_json(), block=gate)
    evaluator = RAGEvaluator(sample_rate=1.0, cache=False, local_judge=LLMJudge(model="m", base_url=judge_server.url))
    processor, writer = attach(provider, evaluator, max_queue_size=3, max_concurrency=1)
    try:
        for _ in range(12):
            rag_request(provider)
        stats = processor.stats
        assert stats["samples_queued"] + stats["samples_dropped_queue_full"] == 12
        assert stats["samples_dropped_queue_full"] >= 12 - 3 - 1
    finally:
        gate.set()
    assert processor.force_flush(30_000)
    assert len(writer.items) == processor.stats["samples_queued"]


def test_bounds_on_traces_in_flight_spans_and_age(provider: TracerProvider) -> None:
    import time

    processor, _ = attach(provider, max_traces_in_flight=2, max_spans_per_trace=3, trace_ttl_s=0.2)
    tracer = provider.get_tracer("app")
    roots = [tracer.start_span(f"root-{i}") for i in range(3)]  # never ended: leaked traces
    assert processor.stats["traces_in_flight"] == 2 and processor.stats["traces_dropped_buffer_full"] == 1
    time.sleep(0.3)
    with tracer.start_as_current_span("rag", attributes={"input.value": QUESTION, "output.value": ANSWER}):
        for i in range(6):
            with tracer.start_as_current_span(f"child-{i}"):
                pass
    stats = processor.stats
    assert stats["traces_expired"] == 2 and stats["spans_dropped_trace_full"] == 3  # the root is always kept
    assert stats["traces_in_flight"] == 0
    for root in roots:
        root.end()


def test_failures_inside_ragtriage_never_reach_the_app(provider: TracerProvider) -> None:
    def broken_callback(sample: RAGSample, result: RAGEvaluationResult) -> None:
        raise RuntimeError("bug in a callback")

    processor, _ = attach(provider, writer=ListWriter(fail=True), on_result=broken_callback)
    rag_request(provider)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("rag", attributes={"input.value": QUESTION}) as root:
        # bad data: non-string contents, bytes that are not UTF-8, a huge document
        root.set_attribute("output.value", ANSWER)
        with tracer.start_as_current_span(
            "r",
            attributes={
                "openinference.span.kind": "RETRIEVER",
                "retrieval.documents.0.document.content": "Paris " * 200_000,
                "retrieval.documents.1.document.content": 42,
                "retrieval.documents.0.document.score": "high",
            },
        ):
            pass
    assert processor.force_flush(10_000)
    stats = processor.stats
    assert stats["write_back_failed"] == 2 and stats["on_result_errors"] == 2
    assert stats["evaluations_ok"] == 2


def test_shutdown_is_idempotent_and_flushes(provider: TracerProvider) -> None:
    processor, writer = attach(provider)
    rag_request(provider)
    processor.shutdown()
    processor.shutdown()
    assert len(writer.items) == 1
    rag_request(provider)  # after shutdown: ignored, no error
    assert len(writer.items) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_evaluates_its_own_traces(provider: TracerProvider, tmp_path) -> None:
    processor, writer = attach(provider)
    rag_request(provider)
    assert processor.force_flush(10_000) and len(writer.items) == 1
    out = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            child_trace = rag_request(provider, answer="Paris, in the child.")
            ok = processor.force_flush(10_000)
            mine = [s.trace_id for s, _ in writer.items[1:]]
            out.write_text(json.dumps({"ok": ok, "mine": mine == [child_trace], "stats": processor.stats}))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child = json.loads(out.read_text())
    assert child["ok"] and child["mine"] and child["stats"]["evaluations_ok"] == 1
    assert len(writer.items) == 1  # the parent did not see the child's trace


def test_ragtriage_does_not_trace_its_own_judge_calls(judge_server: JudgeServer) -> None:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    judge_server.default = Reply(verdict_json())
    provider = TracerProvider()
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        evaluator = RAGEvaluator(sample_rate=1.0, local_judge=LLMJudge(model="m", base_url=judge_server.url))
        processor, writer = attach(provider, evaluator)
        rag_request(provider)
        assert processor.force_flush(10_000) and writer.items[0][1].tier == "local"
        assert len(judge_server.requests) == 1
        assert sorted(s.name for s in exported.get_finished_spans()) == ["llm", "rag", "retrieve"]
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def test_processor_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="handler"):
        EvalSpanProcessor("not a handler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample_rate"):
        EvalSpanProcessor(Pipeline(RAGEvaluator()), sample_rate=1.5)
    with pytest.raises(ValueError, match="max_queue_size"):
        EvalSpanProcessor(Pipeline(RAGEvaluator()), max_queue_size=0)
    with pytest.raises(ValueError, match="trace_ttl_s"):
        EvalSpanProcessor(Pipeline(RAGEvaluator()), trace_ttl_s=-1)


def test_explain_traces_says_why_each_trace_was_or_was_not_evaluated(
    provider: TracerProvider, caplog: pytest.LogCaptureFixture
) -> None:
    processor, writer = attach(provider, explain_traces=2)
    tracer = provider.get_tracer("app")
    with caplog.at_level(logging.INFO, logger="ragtriage.explain"):
        with tracer.start_as_current_span("healthcheck", attributes={"input.value": "ping", "output.value": "pong"}):
            pass  # no retrieval: skipped on the app's thread, explained on the background thread
        assert processor.force_flush(5_000)
        rag_request(provider)
        assert processor.force_flush(5_000)
    skipped, evaluated = processor.explanations()
    assert [root["evaluated"] for root in skipped["roots"]] == [False]
    assert skipped["roots"][0]["reason"] == "no_retrieval"
    assert [root["evaluated"] for root in evaluated["roots"]] == [True]
    assert evaluated["roots"][0]["answer"]["text"] == ANSWER
    assert len(writer.items) == 1 and processor.stats["samples_queued"] == 1  # explaining is not evaluating
    assert any(r.name == "ragtriage.explain" and '"no_retrieval"' in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="explain_traces"):
        EvalSpanProcessor(Pipeline(RAGEvaluator()), explain_traces=-1)
