"""From a completed trace's buffered spans to RAG samples: which span's text is the question, the answer, the contexts.

The span processor buffers references to ended spans' attributes on the app's thread; everything
here runs later, on the background thread. Per span, :func:`~ragtriage.span_processor.extraction.extract`
reads what the span carries; here those facts are ranked and joined, once per local root.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ragtriage.sample import Document, RAGSample
from ragtriage.span_processor.extraction import FALLBACK_ANSWER, FALLBACK_QUESTION, extract

#: One ended span as buffered: its (immutable) attribute dict, span id, parent span id, whether a local root.
BufferedSpan = tuple[Mapping[str, Any], int, int, bool]
MAX_DOCUMENTS_PER_TRACE = 256


def assemble(trace_id: int, spans: list[BufferedSpan]) -> tuple[list[RAGSample], Counter[str]]:
    """The samples of one completed trace (one per local root), and the reasons the others were skipped."""
    samples: list[RAGSample] = []
    skipped: Counter[str] = Counter()
    for root_span_id, group in by_local_root(spans, skipped):
        facts = _Facts()
        for attributes, span_id, _, is_root in group:
            facts.add(attributes, span_id, is_root)
        if not facts.documents:
            skipped["traces_not_rag"] += 1
        elif facts.question is None or facts.answer is None:
            skipped["traces_incomplete"] += 1
        else:
            samples.append(RAGSample(trace_id, root_span_id, facts.question[1], facts.answer[1], facts.documents))
    return samples, skipped


def by_local_root(spans: list[BufferedSpan], skipped: Counter[str]) -> list[tuple[int, list[BufferedSpan]]]:
    """Split a trace's spans by the local root they descend from (almost always just one root)."""
    roots = [span_id for _, span_id, _, is_root in spans if is_root]
    if len(roots) == 1:
        return [(roots[0], spans)]
    groups: dict[int, list[BufferedSpan]] = {root: [] for root in roots}
    parent_of = {span_id: parent_id for _, span_id, parent_id, is_root in spans if not is_root}
    for span in spans:
        node: int | None = span[1]
        for _ in range(len(spans) + 1):  # a parent chain is never longer than the buffer
            if node in groups:
                groups[node].append(span)
                break
            node = parent_of.get(node)  # type: ignore[arg-type]
            if node is None:  # its parent was not buffered (dropped, or still open): whose is it?
                skipped["spans_unattributed"] += 1
                break
    return list(groups.items())


class _Facts:
    """The best question/answer seen so far, by source priority, and the documents."""

    __slots__ = ("answer", "documents", "question")

    def __init__(self) -> None:
        self.question: tuple[int, str] | None = None
        self.answer: tuple[int, str] | None = None
        self.documents: list[Document] = []

    def offer(self, slot: str, priority: int, text: str | None) -> None:
        if text is None:
            return
        current = getattr(self, slot)
        if current is None or priority <= current[0]:
            setattr(self, slot, (priority, text))

    def add(self, attributes: Mapping[str, Any], span_id: int, is_root: bool) -> None:
        facts = extract(attributes, span_id)
        if facts is None:
            return
        explicit = FALLBACK_QUESTION in attributes or FALLBACK_ANSWER in attributes
        priority = 0 if explicit else (1 if is_root else 2)
        self.offer("question", priority, facts.question)
        self.offer("answer", priority, facts.answer)
        self.offer("question", 3, facts.llm_question)
        self.offer("answer", 3, facts.llm_answer)
        room = MAX_DOCUMENTS_PER_TRACE - len(self.documents)
        if facts.documents and room > 0:
            self.documents.extend(facts.documents[:room])
