"""LlamaIndex through openinference-instrumentation-llama-index: query engines (plain, streaming) and the
condense_plus_context chat engine, on MockEmbedding and a scripted LLM (LlamaIndex's own CustomLLM)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="the test-frameworks extra is not installed (llama-index-core)")
pytest.importorskip("openinference.instrumentation.llama_index", reason="openinference-instrumentation-llama-index")

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor
from pydantic import Field

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


class ScriptedLLM(CustomLLM):
    """LlamaIndex's MockLLM answers "text text ..."; this one answers what the test says (and rephrases on
    the chat engine's condense prompt), through the same CustomLLM machinery."""

    answer: str = ""
    rephrased: str = ""
    prompts: list[str] = Field(default_factory=list)
    chat_model: bool = False  # then LlamaIndex sends chat messages (CustomLLM turns them into one prompt)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted", is_chat_model=self.chat_model)

    def _reply(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.rephrased if "standalone question" in prompt else self.answer

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._reply(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._reply(prompt)

        def gen() -> CompletionResponseGen:
            for i in range(0, len(text), 7):
                yield CompletionResponse(text=text[: i + 7], delta=text[i : i + 7])

        return gen()


@pytest.fixture(scope="module")
def index(harness: Harness) -> Iterator[VectorStoreIndex]:
    instrumentor = LlamaIndexInstrumentor()
    instrument(instrumentor, harness.provider)
    Settings.embed_model = MockEmbedding(embed_dim=8)
    # All mock embeddings are equal, so both documents are retrieved, each with the same score.
    yield VectorStoreIndex.from_documents([Document(text=t, id_=i) for t, i in zip(CONTEXTS, IDS, strict=True)])
    instrumentor.uninstrument()


def check(run: Run, answer: str, question: str = QUESTION) -> None:
    sample = run.sample
    assert (sample.question, sample.answer) == (question, answer)
    assert sorted(sample.contexts) == sorted(CONTEXTS)
    retrieved = [a for s in run.spans if (a := s.attributes or {}).get("retrieval.documents.0.document.id")]
    assert retrieved, "the instrumentor reported no documents"
    # Ids are the chunk (node) ids LlamaIndex made; scores are the similarities it computed: exactly those.
    app_docs = [
        (
            retrieved[-1][f"retrieval.documents.{i}.document.id"],
            retrieved[-1][f"retrieval.documents.{i}.document.score"],
        )
        for i in range(2)
    ]
    assert [(d.id, d.score) for d in sample.documents] == app_docs
    assert all(d.score is not None and d.score > 0.99 for d in sample.documents)
    assert_on_root(run)
    assert_judged(run, answer)


@ANSWERS
def test_query_engine(harness: Harness, index: VectorStoreIndex, answer: str) -> None:
    engine = index.as_query_engine(llm=ScriptedLLM(answer=answer), similarity_top_k=2)
    response: list[str] = []
    run = harness.run(lambda: response.append(str(engine.query(QUESTION))))
    assert response == [answer]
    check(run, answer)


@ANSWERS
def test_streaming_query_engine(harness: Harness, index: VectorStoreIndex, answer: str) -> None:
    engine = index.as_query_engine(llm=ScriptedLLM(answer=answer), similarity_top_k=2, streaming=True)
    streamed: list[str] = []
    run = harness.run(lambda: streamed.extend(engine.query(QUESTION).response_gen))
    assert "".join(streamed) == answer
    check(run, answer)


@pytest.mark.parametrize("chat_model", [False, True], ids=["completion-llm", "chat-llm"])
@ANSWERS
def test_condense_plus_context_chat_engine(
    harness: Harness, index: VectorStoreIndex, answer: str, chat_model: bool
) -> None:
    """Turn two: the engine condenses the turn and the history into a standalone query and searches with it; the
    question judged is the user's turn. A chat LLM is sent the history as messages, and it travels with the
    sample; a completion LLM gets it inside one prompt string, which is not taken apart."""
    first = "Tell me about France."
    llm = ScriptedLLM(
        answer="France is a country in Western Europe.", rephrased="capital city of France", prompts=[],
        chat_model=chat_model,
    )  # fmt: skip
    engine = index.as_chat_engine(chat_mode="condense_plus_context", llm=llm, similarity_top_k=2)
    harness.run(lambda: engine.chat(first))
    llm.answer = answer
    turn = "And what is its capital?"
    reply: list[str] = []
    run = harness.run(lambda: reply.append(str(engine.chat(turn))))
    assert reply == [answer]
    assert any("standalone question" in p for p in llm.prompts)  # the condense step ran
    retriever_inputs = [s.attributes.get("input.value") for s in run.spans if s.name.endswith("Retriever.retrieve")]
    assert retriever_inputs == ["capital city of France"]
    check(run, answer, question=turn)
    history = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "France is a country in Western Europe."},
    ]
    assert run.sample.history == (history if chat_model else [])
