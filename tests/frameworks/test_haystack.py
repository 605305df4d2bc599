"""Haystack through openinference-instrumentation-haystack: InMemoryDocumentStore + BM25 retriever, a ranker
component (a RERANKER span) and a tiny generator component; no model, no network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import List  # noqa: UP035 -- the instrumentor recognises a generator by List[str], not list[str]

import pytest

pytest.importorskip("haystack", reason="the test-frameworks extra is not installed (haystack-ai)")
pytest.importorskip("openinference.instrumentation.haystack", reason="openinference-instrumentation-haystack")

from haystack import Document, Pipeline, component
from haystack.components.builders import PromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from openinference.instrumentation.haystack import HaystackInstrumentor

from tests.frameworks.conftest import (
    ANSWERS,
    CONTEXTS,
    QUESTION,
    Harness,
    Run,
    assert_judged,
    assert_on_root,
    instrument,
)

IDS = ["doc-paris", "doc-lyon"]
#: Retrieved by BM25 too, but dropped by the ranker: it must not reach the contexts.
NOISE = "The capital of Australia is Canberra, not Sydney."


@component
class ScriptedGenerator:
    """Stands in for OpenAIGenerator: takes the prompt, replies with the scripted answer."""

    def __init__(self) -> None:
        self.answer = ""
        self.prompts: list[str] = []

    @component.output_types(replies=List[str])  # noqa: UP006
    def run(self, prompt: str) -> dict[str, list[str]]:
        self.prompts.append(prompt)
        return {"replies": [self.answer]}


@component
class KeepRanker:
    """Stands in for a cross-encoder ranker: keeps the documents it was told are relevant, best first, rescored."""

    def __init__(self, keep: list[str]) -> None:
        self.keep = keep

    @component.output_types(documents=List[Document])  # noqa: UP006
    def run(self, query: str, documents: List[Document]) -> dict[str, list[Document]]:  # noqa: UP006
        ranked = sorted((d for d in documents if d.id in self.keep), key=lambda d: self.keep.index(d.id))
        return {"documents": [Document(id=d.id, content=d.content, score=0.9 - i / 10) for i, d in enumerate(ranked)]}


@pytest.fixture(scope="module")
def store(harness: Harness) -> Iterator[InMemoryDocumentStore]:
    instrumentor = HaystackInstrumentor()
    instrument(instrumentor, harness.provider)
    store = InMemoryDocumentStore()
    store.write_documents(
        [Document(id=i, content=t) for i, t in zip(IDS, CONTEXTS, strict=True)] + [Document(id="noise", content=NOISE)]
    )
    yield store
    instrumentor.uninstrument()


TEMPLATE = "Answer from the documents.\n{% for d in documents %}{{ d.content }}\n{% endfor %}Question: {{ question }}"


def pipeline(store: InMemoryDocumentStore, generator: ScriptedGenerator, *, ranker: bool) -> Pipeline:
    p = Pipeline()
    p.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=3))
    p.add_component("prompt", PromptBuilder(template=TEMPLATE, required_variables=["question", "documents"]))
    p.add_component("llm", generator)
    if ranker:
        p.add_component("ranker", KeepRanker(keep=IDS))
        p.connect("retriever.documents", "ranker.documents")
        p.connect("ranker.documents", "prompt.documents")
    else:
        p.connect("retriever.documents", "prompt.documents")
    p.connect("prompt", "llm")
    return p


def run_pipeline(harness: Harness, p: Pipeline, with_ranker: bool) -> tuple[Run, dict]:
    inputs = {"retriever": {"query": QUESTION}, "prompt": {"question": QUESTION}}
    if with_ranker:
        inputs["ranker"] = {"query": QUESTION}
    out: dict = {}
    return harness.run(lambda: out.update(p.run(inputs))), out


@ANSWERS
def test_pipeline_with_a_ranker_judges_the_ranked_documents(
    harness: Harness, store: InMemoryDocumentStore, answer: str
) -> None:
    generator = ScriptedGenerator()
    generator.answer = answer
    run, out = run_pipeline(harness, pipeline(store, generator, ranker=True), True)
    assert out == {"llm": {"replies": [answer]}}
    assert "RERANKER" in run.kinds() and "RETRIEVER" in run.kinds()
    [retriever] = [s for s in run.spans if (s.attributes or {}).get("openinference.span.kind") == "RETRIEVER"]
    assert NOISE in retriever.attributes.values()  # BM25 found it ...
    sample = run.sample
    assert NOISE not in generator.prompts[0] and sample.contexts == CONTEXTS  # ... the ranker dropped it
    assert (sample.question, sample.answer) == (QUESTION, answer)
    assert [(d.id, d.score) for d in sample.documents] == [("doc-paris", 0.9), ("doc-lyon", 0.8)]
    assert_on_root(run)
    assert_judged(run, answer)


@ANSWERS
def test_pipeline_without_a_ranker(harness: Harness, store: InMemoryDocumentStore, answer: str) -> None:
    generator = ScriptedGenerator()
    generator.answer = answer
    run, _ = run_pipeline(harness, pipeline(store, generator, ranker=False), False)
    [retriever] = [
        s.attributes for s in run.spans if (s.attributes or {}).get("openinference.span.kind") == "RETRIEVER"
    ]
    app_docs = [
        (retriever[f"retrieval.documents.{i}.document.content"], retriever[f"retrieval.documents.{i}.document.id"],
         retriever[f"retrieval.documents.{i}.document.score"])
        for i in range(3)
    ]  # fmt: skip
    sample = run.sample
    assert (sample.question, sample.answer) == (QUESTION, answer)
    assert [(d.content, d.id, d.score) for d in sample.documents] == app_docs  # BM25's order and scores
    assert sorted(sample.contexts) == sorted([*CONTEXTS, NOISE])
    assert_on_root(run)
