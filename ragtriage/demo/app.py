"""A tiny RAG app that emits OpenInference spans, like an instrumented LlamaIndex/LangChain app would.

Retrieval is keyword overlap over the bundled corpus; the "generator" replays
the corpus's scripted answers, some of them deliberately hallucinated, so the
demo needs no model and shows what the evaluator catches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from opentelemetry.trace import Tracer

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class DemoItem:
    question: str
    answer: str
    label: str


def load_corpus() -> tuple[dict[str, str], list[DemoItem]]:
    data = json.loads(files("ragtriage.demo").joinpath("corpus.json").read_text(encoding="utf-8"))
    documents = {d["id"]: d["text"] for d in data["documents"]}
    items = [DemoItem(q["q"], q["a"], q["label"]) for q in data["questions"]]
    return documents, items


class DemoApp:
    def __init__(self, tracer: Tracer, documents: dict[str, str], top_k: int = 2) -> None:
        self.tracer = tracer
        self.documents = documents
        self.top_k = top_k
        self._terms = {doc_id: _stems(text) for doc_id, text in documents.items()}

    def retrieve(self, question: str) -> list[tuple[str, float]]:
        words = {w for w in _stems(question) if len(w) > 3}
        scored = [(doc_id, len(words & terms) / (len(words) or 1)) for doc_id, terms in self._terms.items()]
        return sorted(scored, key=lambda pair: -pair[1])[: self.top_k]

    def answer(self, item: DemoItem) -> str:
        with self.tracer.start_as_current_span(
            "rag_query",
            attributes={"openinference.span.kind": "CHAIN", "input.value": item.question},
        ) as root:
            hits = self.retrieve(item.question)
            retrieval: dict[str, Any] = {"openinference.span.kind": "RETRIEVER", "input.value": item.question}
            for i, (doc_id, score) in enumerate(hits):
                prefix = f"retrieval.documents.{i}.document."
                retrieval[prefix + "id"] = doc_id
                retrieval[prefix + "score"] = score
                retrieval[prefix + "content"] = self.documents[doc_id]
            with self.tracer.start_as_current_span("retrieve", attributes=retrieval):
                pass
            context = "\n\n".join(self.documents[doc_id] for doc_id, _ in hits)
            with self.tracer.start_as_current_span(
                "generate",
                attributes={
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "scripted-demo-model",
                    "llm.input_messages.0.message.role": "system",
                    "llm.input_messages.0.message.content": f"Answer from these documents:\n{context}",
                    "llm.input_messages.1.message.role": "user",
                    "llm.input_messages.1.message.content": item.question,
                    "llm.output_messages.0.message.role": "assistant",
                    "llm.output_messages.0.message.content": item.answer,
                },
            ):
                pass
            root.set_attribute("output.value", item.answer)
        return item.answer


def _stems(text: str) -> set[str]:
    """Crude stemming (first five letters) so "refund" finds "Refunds"."""
    return {w[:5] for w in _WORD.findall(text.lower())}
