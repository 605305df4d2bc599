"""The unit of work: one RAG sample (question, answer, the documents the answer was given), and its wire codec.

Every entry point hands samples to the evaluation pipeline in this shape; the Redis Stream
and the evaluator process's pipe carry them as :meth:`RAGSample.to_json` lines.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

#: The Redis Stream between app replicas (``evaluate_in="queue"``) and ``ragtriage worker``s, and the entry field
#: that holds one :meth:`RAGSample.to_json` line.
DEFAULT_STREAM = "ragtriage:samples"
STREAM_FIELD = "sample"


@dataclass(slots=True)
class Document:
    """One retrieved document as the app used it: its text, and the id and score the retriever gave."""

    content: str
    id: str | None = None
    score: float | None = None
    span_id: int = 0
    position: int = 0
    #: Whether Phoenix holds it as document ``position`` of span ``span_id`` (a RETRIEVER's documents, a
    #: RERANKER's output), so it can take a ``document_relevance`` annotation; contexts set by hand
    #: (``ragtriage.contexts``) are no span's documents, and Phoenix refuses the whole request for one of them.
    in_phoenix: bool = True


@dataclass(slots=True)
class RAGSample:
    """One completed RAG trace, ready to evaluate."""

    trace_id: int
    root_span_id: int
    question: str
    answer: str
    documents: list[Document]
    ended_at: float = field(default_factory=time.time)
    #: The conversation before this turn (``{"role", "content"}`` dicts, oldest first), for a judge to read; not judged.
    history: list[dict[str, str]] = field(default_factory=list)
    #: When the evaluated (local) root span started and ended, ns since the epoch; 0 when not known. The EVALUATOR
    #: span is placed inside this interval, so the trace's latency in Phoenix stays the app's.
    root_start_ns: int = 0
    root_end_ns: int = 0
    #: The conversation this turn belongs to (OpenInference ``session.id``), which session scores group by.
    session_id: str | None = None

    @property
    def contexts(self) -> list[str]:
        return [d.content for d in self.documents]

    @property
    def sample_id(self) -> str:
        return f"{self.trace_id:032x}-{self.root_span_id:016x}"

    def to_json(self) -> str:
        """The wire format of the Redis Stream queue (ids as hex, like OTLP JSON)."""
        return json.dumps(
            {
                "v": 1,
                "trace_id": f"{self.trace_id:032x}",
                "root_span_id": f"{self.root_span_id:016x}",
                "question": self.question,
                "answer": self.answer,
                "ended_at": self.ended_at,
                "history": self.history,
                "root_start_ns": self.root_start_ns,
                "root_end_ns": self.root_end_ns,
                "session_id": self.session_id,
                "documents": [
                    {"content": d.content, "id": d.id, "score": d.score, "span_id": f"{d.span_id:016x}",
                     "position": d.position, "in_phoenix": d.in_phoenix}
                    for d in self.documents
                ],
            },
            ensure_ascii=False,
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> RAGSample:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything malformed (a poison entry)."""
        try:
            data = json.loads(text)
            if data.get("v") != 1:
                raise ValueError(f"unknown sample format version {data.get('v')!r}")
            documents = [
                Document(
                    str(d["content"]),
                    d.get("id"),
                    d.get("score"),
                    int(d["span_id"], 16),
                    int(d["position"]),
                    d.get("in_phoenix") is not False,  # absent in lines written before it existed
                )
                for d in data["documents"]
            ]
            return cls(
                int(data["trace_id"], 16),
                int(data["root_span_id"], 16),
                _string(data["question"]),
                _string(data["answer"]),
                documents,
                float(data["ended_at"]),
                _history(data.get("history")),  # absent in lines written before it existed
                int(data.get("root_start_ns") or 0),  # likewise
                int(data.get("root_end_ns") or 0),
                session_id=_optional_string(data.get("session_id")),  # likewise
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed sample: {type(exc).__name__}: {exc}") from None


def _history(value: object) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"history: expected a list, got {type(value).__name__}")
    return [{"role": _string(t["role"]), "content": _string(t["content"])} for t in value]


def _optional_string(value: object) -> str | None:
    return None if value is None else _string(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value
