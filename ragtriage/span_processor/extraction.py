"""Copy the few attributes an evaluation needs out of finished spans.

OpenInference conventions first (CHAIN root ``input.value``/``output.value``,
RETRIEVER ``retrieval.documents.{i}.document.*``, LLM messages); for apps
without OpenInference, three ``ragtriage.*`` attributes do the same job:
``ragtriage.question``, ``ragtriage.answer`` and ``ragtriage.contexts`` (a
list of strings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openinference.semconv.trace import DocumentAttributes, MessageAttributes, SpanAttributes

from ragtriage.sample import Document

KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
INPUT = SpanAttributes.INPUT_VALUE
INPUT_MIME = SpanAttributes.INPUT_MIME_TYPE
OUTPUT = SpanAttributes.OUTPUT_VALUE
DOCS = SpanAttributes.RETRIEVAL_DOCUMENTS
FALLBACK_QUESTION = "ragtriage.question"
FALLBACK_ANSWER = "ragtriage.answer"
FALLBACK_CONTEXTS = "ragtriage.contexts"
#: Set on ragtriage's own EVALUATOR spans, so they are never evaluated themselves.
OWN_SPAN = "ragtriage.evaluation"

MAX_DOCUMENTS = 64
_QUESTION_KEYS = ("question", "query", "input", "user_input", "prompt")
#: ``retrieval.documents.{i}.document.{content,score,id}``, formatted once instead of per span
_DOCUMENT_KEYS = tuple(
    tuple(f"{DOCS}.{i}.{name}" for name in (DocumentAttributes.DOCUMENT_CONTENT, DocumentAttributes.DOCUMENT_SCORE,
                                            DocumentAttributes.DOCUMENT_ID))
    for i in range(MAX_DOCUMENTS)
)  # fmt: skip


@dataclass(slots=True)
class SpanFacts:
    """What one span contributes to its trace's sample."""

    question: str | None = None
    answer: str | None = None
    llm_question: str | None = None
    llm_answer: str | None = None
    documents: list[Document] = field(default_factory=list)


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None


def _question_from_input(value: str, mime: Any) -> str:
    if mime == "application/json" or value[:1] == "{":
        try:
            data = json.loads(value)
        except ValueError:
            return value
        if isinstance(data, dict):
            for key in _QUESTION_KEYS:
                if isinstance(data.get(key), str):
                    return data[key]
    return value


def extract(attributes: Mapping[str, Any], span_id: int) -> SpanFacts | None:
    """``None`` when the span carries nothing an evaluation uses (most spans)."""
    facts = SpanFacts()
    kind = attributes.get(KIND)
    found = False

    if FALLBACK_QUESTION in attributes or FALLBACK_ANSWER in attributes or FALLBACK_CONTEXTS in attributes:
        question = _text(attributes.get(FALLBACK_QUESTION))
        answer = _text(attributes.get(FALLBACK_ANSWER))
        contexts = attributes.get(FALLBACK_CONTEXTS)
        facts.question, facts.answer = question, answer
        if isinstance(contexts, list | tuple):
            facts.documents = [
                Document(t, span_id=span_id, position=i)
                for i, c in enumerate(contexts[:MAX_DOCUMENTS])
                if (t := _text(c)) is not None
            ]
        found = True

    if kind == "RETRIEVER" and not facts.documents:
        for i, (content_key, score_key, id_key) in enumerate(_DOCUMENT_KEYS):
            content = _text(attributes.get(content_key))
            if content is None:
                break
            score = attributes.get(score_key)
            doc_id = attributes.get(id_key)
            facts.documents.append(
                Document(
                    content,
                    id=None if doc_id is None else str(doc_id),
                    score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
                    span_id=span_id,
                    position=i,
                )
            )
        found = found or bool(facts.documents)
    elif kind == "LLM":
        facts.llm_question = _last_user_message(attributes)
        facts.llm_answer = _text(
            attributes.get(f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_CONTENT}")
        ) or _text(attributes.get(OUTPUT))
        found = found or facts.llm_question is not None or facts.llm_answer is not None

    if facts.question is None:
        raw = _text(attributes.get(INPUT))
        if raw is not None and kind != "RETRIEVER":
            facts.question = _question_from_input(raw, attributes.get(INPUT_MIME))
            found = True
    if facts.answer is None and kind not in ("RETRIEVER", "LLM"):
        facts.answer = _text(attributes.get(OUTPUT))
        found = found or facts.answer is not None
    return facts if found else None


def _last_user_message(attributes: Mapping[str, Any]) -> str | None:
    last = None
    prefix = SpanAttributes.LLM_INPUT_MESSAGES
    for i in range(256):
        role = attributes.get(f"{prefix}.{i}.{MessageAttributes.MESSAGE_ROLE}")
        if role is None:
            break
        if role == "user":
            last = _text(attributes.get(f"{prefix}.{i}.{MessageAttributes.MESSAGE_CONTENT}"))
    return last
