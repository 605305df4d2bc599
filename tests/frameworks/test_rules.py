"""The extraction rules on spans the frameworks do not (yet) produce: bad data, skip reasons, explain(), the codec.

The framework modules check the rules on real instrumentors' spans; these feed assemble() the buffered-span
tuples the processor hands it, for the shapes no fake model makes (huge, broken or hostile values)."""

from __future__ import annotations

import json

import pytest

from ragtriage.intake.assembly import SKIP_REASONS, assemble, explain
from ragtriage.intake.extraction import MAX_JSON_CHARS, answer_in, question_in, turn
from ragtriage.sample import Document, RAGSample

Q, A = "What is the capital of France?", "Paris."
ROOT, RETRIEVER, LLM, RERANKER, CHILD = 0x1, 0x2, 0x3, 0x4, 0x5


def retriever(*contents: object, ids: tuple = (), scores: tuple = (), span_id: int = RETRIEVER, parent: int = ROOT):
    attributes: dict[str, object] = {"openinference.span.kind": "RETRIEVER"}
    for i, content in enumerate(contents):
        attributes[f"retrieval.documents.{i}.document.content"] = content
        if i < len(ids):
            attributes[f"retrieval.documents.{i}.document.id"] = ids[i]
        if i < len(scores):
            attributes[f"retrieval.documents.{i}.document.score"] = scores[i]
    return (attributes, span_id, parent, False)


def root(**attributes: object):
    return ({"openinference.span.kind": "CHAIN", **attributes}, ROOT, 0, True)


def one(spans: list) -> RAGSample:
    samples, skipped = assemble(7, spans)
    assert not skipped, skipped
    [sample] = samples
    return sample


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        (json.dumps({"input": Q, "context": [{"page_content": "x"}], "answer": A}), A),
        (json.dumps({"output": A, "intermediate_steps": []}), A),
        (json.dumps({"result": A, "source_documents": []}), A),
        (json.dumps({"response": A, "source_nodes": ["<node>"]}), A),
        (json.dumps({"text": A}), A),
        (json.dumps({"type": "ai", "data": {"content": A, "type": "ai"}}), A),
        (
            json.dumps(
                {
                    "lc": 1,
                    "type": "constructor",
                    "id": ["langchain", "schema", "messages", "AIMessage"],
                    "kwargs": {"content": A},
                }
            ),
            A,
        ),
        (json.dumps({"role": "assistant", "content": [{"type": "text", "text": A}]}), A),
        (json.dumps({"messages": [{"type": "human", "content": Q}, {"type": "ai", "content": A}]}), A),
        (json.dumps({"llm": {"replies": [A, "second"]}}), A),
        ("{not json at all", "{not json at all"),
        ("plain text", "plain text"),
    ],
)
def test_structured_root_outputs(output: str, answer: str) -> None:
    assert one([retriever("doc"), root(**{"input.value": Q, "output.value": output})]).answer == answer


def test_a_json_object_without_an_answer_yields_to_the_llm_and_is_used_only_for_want_of_anything_else() -> None:
    output = json.dumps({"city": "Paris", "confidence": 0.9})
    llm = ({"openinference.span.kind": "LLM", "llm.output_messages.0.message.content": A}, LLM, ROOT, False)
    assert one([retriever("doc"), llm, root(**{"input.value": Q, "output.value": output})]).answer == A
    assert one([retriever("doc"), root(**{"input.value": Q, "output.value": output})]).answer == output


def test_a_stream_placeholder_is_no_answer() -> None:
    samples, skipped = assemble(7, [retriever("doc"), root(**{"input.value": Q, "output.value": "<generator object>"})])
    assert samples == [] and skipped == {"no_answer": 1}


@pytest.mark.parametrize(
    ("value", "question", "history"),
    [
        (
            json.dumps({"input": Q, "chat_history": [["human", "Hi"], ["ai", "Hello"]]}),
            Q,
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        ),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello"},
                        {"role": "user", "content": Q},
                    ]
                }
            ),
            Q,
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        ),
        (json.dumps({"data": {"retriever": {"query": Q}, "prompt": {"question": Q}}}), Q, []),
        (json.dumps({"query_bundle": {"query_str": Q, "embedding": None}}), Q, []),
        (json.dumps({"message": Q}), Q, []),
    ],
)
def test_structured_root_inputs(value: str, question: str, history: list) -> None:
    sample = one([retriever("doc"), root(**{"input.value": value, "output.value": A})])
    assert (sample.question, sample.history) == (question, history)


def test_documents_from_several_retrievers_deduplicated_by_id_else_content_in_order() -> None:
    spans = [
        retriever("a", "b", ids=("1", "2"), scores=(0.9, 0.8), span_id=0x10),
        retriever("b again", "c", "a", ids=("2",), span_id=0x11),  # id 2 seen; "a" by content
        root(**{"input.value": Q, "output.value": A}),
    ]
    assert [(d.content, d.id) for d in one(spans).documents] == [("a", "1"), ("b", "2"), ("c", None)]


def test_a_nested_retriever_only_fills_in_the_outer_ones_ids_and_scores() -> None:
    spans = [
        retriever("a", "b", "z", ids=("1", "2", "9"), scores=(0.5, 0.4, 0.1), span_id=0x11, parent=0x10),
        retriever("b", "a", span_id=0x10),  # e.g. dspy.Retrieve over ColBERTv2: text only, fused order
        root(**{"input.value": Q, "output.value": A}),
    ]
    assert [(d.content, d.id, d.score) for d in one(spans).documents] == [("b", "2", 0.4), ("a", "1", 0.5)]


def test_reranker_output_replaces_its_input() -> None:
    reranker = {"openinference.span.kind": "RERANKER"}
    for i, (content, doc_id) in enumerate([("a", "1"), ("b", "2"), ("c", "3")]):
        reranker[f"reranker.input_documents.{i}.document.content"] = content
        reranker[f"reranker.input_documents.{i}.document.id"] = doc_id
    for i, (content, doc_id, score) in enumerate([("c", "3", 0.99), ("a", "1", 0.5)]):
        reranker[f"reranker.output_documents.{i}.document.content"] = content
        reranker[f"reranker.output_documents.{i}.document.id"] = doc_id
        reranker[f"reranker.output_documents.{i}.document.score"] = score
    spans = [
        retriever("a", "b", "c", ids=("1", "2", "3")),
        retriever("kept", ids=("k",), span_id=0x12),
        (reranker, RERANKER, ROOT, False),
        root(**{"input.value": Q, "output.value": A}),
    ]
    documents = one(spans).documents
    assert [(d.content, d.score, d.span_id, d.position) for d in documents] == [
        ("c", 0.99, RERANKER, 0),
        ("a", 0.5, RERANKER, 1),
        ("kept", None, 0x12, 0),
    ]


def test_bad_data_is_no_fact_and_no_crash() -> None:
    huge = "{" + " " * (MAX_JSON_CHARS + 1) + "}"
    spans = [
        retriever(b"caf\xe9 \xff", 12, "never read: after a gap", ids=(True,), scores=(float("nan"),)),
        (
            {
                "openinference.span.kind": "LLM",
                "llm.input_messages.0.message.role": 3,
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": None,
                "output.value": "[" * 100_000,
            },
            LLM,
            ROOT,
            False,
        ),
        ({"openinference.span.kind": ["CHAIN"], "input.value": b"\xff\xfe", "output.value": 42}, CHILD, ROOT, False),
        root(**{"input.value": huge, "output.value": huge}),
    ]
    samples, skipped = assemble(7, spans)
    assert samples == [] and skipped == {"no_question": 1}  # the huge JSON is no question, the bytes are no kind
    [document] = explain(7, spans)["roots"][0]["contexts"]
    assert document == {"span_id": f"{RETRIEVER:016x}", "position": 0, "id": None, "score": None, "chars": 6}


def test_every_skipped_root_has_a_named_reason() -> None:
    empty_retriever = ({"openinference.span.kind": "RETRIEVER", "input.value": Q}, RETRIEVER, ROOT, False)
    cases = {
        "no_retrieval": [empty_retriever, root(**{"input.value": Q, "output.value": A})],
        "no_question": [retriever("doc"), ({"output.value": A}, ROOT, 0, True)],
        "no_answer": [retriever("doc"), root(**{"input.value": Q})],
    }
    for reason, spans in cases.items():
        samples, skipped = assemble(7, spans)
        assert samples == [] and skipped == {reason: 1}
        report = explain(7, spans)
        assert report["roots"][0]["reason"] == reason and report["roots"][0]["why"] == SKIP_REASONS[reason]
        json.dumps(report)


def test_explain_says_which_span_gave_what() -> None:
    spans = [
        retriever("Paris is the capital.", ids=("d1",), scores=(0.9,)),
        (
            {
                "openinference.span.kind": "LLM",
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "prompt",
                "llm.output_messages.0.message.content": A,
            },
            LLM,
            ROOT,
            False,
        ),
        root(**{"input.value": json.dumps({"input": Q}), "output.value": json.dumps({"answer": A, "context": []})}),
    ]
    report = explain(0xABC, spans)
    assert report["trace_id"] == f"{0xABC:032x}" and report["spans_unattributed"] == 0
    [r] = report["roots"]
    assert r["evaluated"] is True and r["reason"] is None
    assert r["question"] == {"span_id": f"{ROOT:016x}", "source": "input.value[input]", "text": Q}
    assert r["answer"] == {"span_id": f"{ROOT:016x}", "source": "output.value[answer]", "text": A}
    assert r["contexts"] == [{"span_id": f"{RETRIEVER:016x}", "position": 0, "id": "d1", "score": 0.9, "chars": 21}]
    gave = {s["span_id"]: s["gave"] for s in r["spans"]}
    assert gave == {f"{RETRIEVER:016x}": ["contexts"], f"{LLM:016x}": [], f"{ROOT:016x}": ["question", "answer"]}
    llm = next(s for s in r["spans"] if s["kind"] == "LLM")
    assert llm["found"] == {"llm_question": "prompt", "llm_answer": A} and llm["top_level"] is False
    json.dumps(report)


def test_ragtriage_fallback_attributes_still_win() -> None:
    spans = [
        (
            {"ragtriage.question": "explicit q", "ragtriage.answer": "explicit a", "ragtriage.contexts": ["c1", "c2"]},
            CHILD,
            ROOT,
            False,
        ),
        root(**{"input.value": Q, "output.value": A}),
    ]
    sample = one(spans)
    assert (sample.question, sample.answer, sample.contexts) == ("explicit q", "explicit a", ["c1", "c2"])


def test_history_travels_in_the_wire_format_and_old_lines_still_read() -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello ☃"}]
    sample = RAGSample(1, 2, Q, A, [Document("doc", "d1", 0.5, 3, 0)], 10.0, history=history)
    assert RAGSample.from_json(sample.to_json()) == sample
    old = json.loads(sample.to_json())
    del old["history"]
    assert RAGSample.from_json(json.dumps(old)).history == []
    old["history"] = [{"role": "user"}]
    with pytest.raises(ValueError, match="malformed"):
        RAGSample.from_json(json.dumps(old))


def test_message_shapes() -> None:
    assert turn({"type": "human", "data": {"content": "x"}}) == {"role": "user", "content": "x"}
    assert turn(("assistant", "y")) == {"role": "assistant", "content": "y"}
    assert turn({"role": "narrator", "content": "z"}) is None and turn("text") is None
    assert question_in([{"role": "user", "content": Q}]) == (Q, [], "[messages]")
    assert answer_in([A, "other"]) == (None, "")  # a top-level list of several is ambiguous
