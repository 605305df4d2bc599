"""From a completed trace's buffered spans to RAG samples: which span's text is the question, the answer, the contexts.

The span processor buffers references to ended spans' attributes on the app's thread; everything
here runs later, on the background thread. Per span, :func:`~ragtriage.intake.extraction.extract`
reads what the span carries; here those facts are ranked and joined, once per local root (the rules are
in the extraction module's docstring). A root that gives no sample is counted under one of
:data:`SKIP_REASONS`; :func:`explain` says the same for one trace in detail, for ``ragtriage doctor``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ragtriage.intake.extraction import KIND, SpanFacts, Turn, extract
from ragtriage.sample import Document, RAGSample

#: One ended span as buffered: its (immutable) attribute dict, span id, parent span id, whether a local root.
BufferedSpan = tuple[Mapping[str, Any], int, int, bool]
MAX_DOCUMENTS_PER_TRACE = 256

#: Why a local root gave no sample (the keys of :func:`assemble`'s counter), checked in this order.
SKIP_REASONS: dict[str, str] = {
    "no_retrieval": "no RETRIEVER span (or ragtriage.contexts) under the root returned a document",
    "no_question": "no span gave a question (root input.value, ragtriage.question, an LLM user message)",
    "no_answer": "no span gave an answer (root output.value, ragtriage.answer, an LLM output)",
}
#: Spans whose parent was not buffered, so no root could be given them (counted per span, not per trace).
UNATTRIBUTED = "spans_unattributed"


def stats_key(reason: str) -> str:
    """The ``stats`` counter of a skip reason of :func:`assemble` (the span-level one is its own name)."""
    return reason if reason == UNATTRIBUTED else f"traces_skipped_{reason}"


#: Why a trace was not evaluated: the ``stats`` counter -> the ``reason`` of ``ragtriage.eval.traces.skipped``.
#: (Traces dropped for lack of room are ``ragtriage.eval.samples.dropped``.)
SKIP_COUNTERS: dict[str, str] = {
    "traces_not_sampled": "not_sampled",
    **{stats_key(reason): reason for reason in SKIP_REASONS},
}


# Answer priorities (lower wins; on a tie the span that ended later wins). See the extraction docstring.
_EXPLICIT, _ROOT, _CHAIN, _LLM_MESSAGE, _LLM_OUTPUT, _WEAK = 0, 1, 2, 3, 4, 5
_PREVIEW = 200


def assemble(trace_id: int, spans: list[BufferedSpan]) -> tuple[list[RAGSample], Counter[str]]:
    """The samples of one completed trace (one per local root), and the reasons the others were skipped."""
    samples: list[RAGSample] = []
    skipped: Counter[str] = Counter()
    for root_span_id, group in by_local_root(spans, skipped):
        facts = _Facts.of(group)
        reason = facts.skip_reason()
        if reason is not None:
            skipped[reason] += 1
        else:
            samples.append(facts.sample(trace_id, root_span_id))
    return samples, skipped


def explain(trace_id: int, spans: list[BufferedSpan]) -> dict[str, Any]:
    """What was found in each span of one trace, which span gave the question, answer and contexts, and why each
    local root was or was not evaluated, as a plain JSON-able dict (ids in hex, texts cut to 200 characters)::

        {"trace_id": "...", "spans_unattributed": 0, "roots": [{
            "root_span_id": "...", "evaluated": False, "reason": "no_answer", "why": "no span gave an answer ...",
            "question": {"span_id": "...", "source": "input.value[input]", "text": "..."} | None,
            "answer": {...} | None, "history_turns": 0,
            "contexts": [{"span_id": "...", "position": 0, "id": "d1", "score": 0.9, "chars": 31}],
            "spans": [{"span_id": "...", "parent_span_id": "..." | None, "root": True, "top_level": True,
                       "kind": "CHAIN", "found": {"question": "...", "answer": "...", "documents": 2, ...},
                       "gave": ["question"]}],
        }]}
    """
    skipped: Counter[str] = Counter()
    roots = []
    for root_span_id, group in by_local_root(spans, skipped):
        facts = _Facts.of(group)
        reason = facts.skip_reason()
        contexts = facts.contexts()
        gave: dict[int, list[str]] = {}
        for slot, best in (("question", facts.question), ("answer", facts.answer)):
            if best is not None:
                gave.setdefault(best[2], []).append(slot)
        for span_id in dict.fromkeys(d.span_id for d in contexts):
            gave.setdefault(span_id, []).append("contexts")
        roots.append(
            {
                "root_span_id": f"{root_span_id:016x}",
                "evaluated": reason is None,
                "reason": reason,
                "why": SKIP_REASONS.get(reason) if reason else None,
                "question": _described(facts.question),
                "answer": _described(facts.answer),
                "history_turns": len(facts.history[2]) if facts.history else 0,
                "contexts": [_context_report(d) for d in contexts],
                "spans": [
                    _span_report(
                        attributes, span_id, parent_id, is_root, span_id in facts.top_level, gave.get(span_id, [])
                    )
                    for attributes, span_id, parent_id, is_root in group
                ],
            }
        )
    return {"trace_id": f"{trace_id:032x}", "spans_unattributed": skipped[UNATTRIBUTED], "roots": roots}


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
                skipped[UNATTRIBUTED] += 1
                break
    return list(groups.items())


def _key(document: Document) -> tuple[str, str]:
    return ("id", document.id) if document.id is not None else ("content", document.content)


class _Facts:
    """The best question/answer/history seen so far, by source priority, and the documents of one local root."""

    __slots__ = ("answer", "history", "parent_of", "question", "rerankers", "retrieved", "session_id", "top_level")

    def __init__(self) -> None:
        # (priority, text, span id, source)
        self.question: tuple[int, str, int, str] | None = None
        self.answer: tuple[int, str, int, str] | None = None
        self.history: tuple[int, int, list[Turn]] | None = None
        self.retrieved: list[tuple[int, list[Document]]] = []  # (span id, documents), in span end order
        self.rerankers: list[SpanFacts] = []
        self.parent_of: dict[int, int] = {}
        self.top_level: set[int] = set()  # spans that may speak for the request (the root, outermost chains)
        self.session_id: str | None = None  # the first span's that names one (instrumentors set it on every span)

    @classmethod
    def of(cls, group: list[BufferedSpan]) -> _Facts:
        facts = cls()
        kinds: dict[int, bool] = {}  # span id -> has an OpenInference kind
        for attributes, span_id, parent_id, _ in group:
            facts.parent_of[span_id] = parent_id
            kinds[span_id] = isinstance(attributes.get(KIND), str)
        for attributes, span_id, _, is_root in group:
            top_level = is_root or facts._top_level(span_id, kinds)
            if top_level:
                facts.top_level.add(span_id)
            span = extract(attributes, span_id, io=top_level)
            if span is not None:
                facts.add(span, span_id, is_root, top_level)
        return facts

    def _top_level(self, span_id: int, kinds: dict[int, bool]) -> bool:
        """No ancestor has an OpenInference kind: the outermost chain under a server span, say, not a step inside
        a chain (a text splitter's or a prompt formatter's output is no answer)."""
        node = self.parent_of.get(span_id)
        for _ in range(len(self.parent_of)):
            if not node:
                return True
            if kinds.get(node, False):
                return False
            node = self.parent_of.get(node)
        return True

    def _offer(self, slot: str, priority: int, text: str | None, span_id: int, source: str | None) -> None:
        if text is None:
            return
        current = getattr(self, slot)
        if current is None or priority <= current[0]:
            setattr(self, slot, (priority, text, span_id, source or ""))

    def _offer_history(self, priority: int, span_id: int, turns: list[Turn] | None) -> None:
        if turns and (self.history is None or priority <= self.history[0]):
            self.history = (priority, span_id, turns)

    def add(self, facts: SpanFacts, span_id: int, is_root: bool, top_level: bool = True) -> None:
        level = _EXPLICIT if facts.explicit else (_ROOT if is_root else _CHAIN)
        if self.session_id is None:
            self.session_id = facts.session_id
        if top_level or facts.explicit:
            self._offer("question", level, facts.question, span_id, facts.question_source)
            self._offer_history(level, span_id, facts.history)
            self._offer("answer", _WEAK if facts.answer_weak else level, facts.answer, span_id, facts.answer_source)
        self._offer("question", _LLM_MESSAGE, facts.llm_question, span_id, "llm.input_messages")
        self._offer_history(_LLM_MESSAGE, span_id, facts.llm_history)
        if facts.llm_answer_weak:
            self._offer("answer", _LLM_OUTPUT, facts.llm_answer, span_id, "output.value")
        else:
            self._offer("answer", _LLM_MESSAGE, facts.llm_answer, span_id, "llm.output_messages")
        if facts.documents:
            self.retrieved.append((span_id, facts.documents))
        if facts.reranker_input or facts.reranker_output:
            self.rerankers.append(facts)

    def _inside_retriever(self, span_id: int, retrievers: set[int]) -> bool:
        node = self.parent_of.get(span_id)
        for _ in range(len(self.parent_of)):
            if node is None or node == 0:
                return False
            if node in retrievers:
                return True
            node = self.parent_of.get(node)
        return False

    def contexts(self) -> list[Document]:
        """The documents the answer was given: outer retrievers' (deduplicated), then each reranker's swap."""
        retrievers = {span_id for span_id, _ in self.retrieved}
        documents: list[Document] = []
        index: dict[tuple[str, str], Document] = {}
        by_content: dict[str, Document] = {}
        nested: list[Document] = []
        for span_id, found in self.retrieved:
            if self._inside_retriever(span_id, retrievers):
                nested.extend(found)
                continue
            for document in found:
                if _key(document) in index or document.content in by_content:
                    continue
                index[_key(document)] = by_content[document.content] = document
                documents.append(document)
        for document in nested:  # an inner retriever knows ids and scores the outer one may not pass on
            outer = by_content.get(document.content)
            if outer is not None:
                outer.id = outer.id if outer.id is not None else document.id
                outer.score = outer.score if outer.score is not None else document.score
        for reranker in self.rerankers:
            documents = _rerank(documents, reranker.reranker_input, reranker.reranker_output)
        return documents[:MAX_DOCUMENTS_PER_TRACE]

    def skip_reason(self) -> str | None:
        if not self.retrieved and not any(r.reranker_output for r in self.rerankers):
            return "no_retrieval"
        if self.question is None:
            return "no_question"
        if self.answer is None:
            return "no_answer"
        return None

    def sample(self, trace_id: int, root_span_id: int) -> RAGSample:
        assert self.question is not None and self.answer is not None
        history = list(self.history[2]) if self.history else []
        return RAGSample(
            trace_id,
            root_span_id,
            self.question[1],
            self.answer[1],
            self.contexts(),
            history=history,
            session_id=self.session_id,
        )


def _rerank(documents: list[Document], inputs: list[Document], outputs: list[Document]) -> list[Document]:
    """The reranker's output documents in place of its input documents (where the first of them was)."""
    if not outputs:
        return documents
    dropped = {_key(d) for d in inputs} | {("content", d.content) for d in inputs}
    kept: list[Document] = []
    at = None
    for document in documents:
        if _key(document) in dropped or ("content", document.content) in dropped:
            at = len(kept) if at is None else at
        else:
            kept.append(document)
    at = len(kept) if at is None else at
    seen = {_key(d) for d in kept} | {("content", d.content) for d in kept}
    fresh = []
    for document in outputs:
        if _key(document) not in seen and ("content", document.content) not in seen:
            seen.add(_key(document))
            seen.add(("content", document.content))
            fresh.append(document)
    return kept[:at] + fresh + kept[at:]


def _context_report(document: Document) -> dict[str, Any]:
    return {"span_id": f"{document.span_id:016x}", "position": document.position, "id": document.id,
            "score": document.score, "chars": len(document.content)}  # fmt: skip


def _described(best: tuple[int, str, int, str] | None) -> dict[str, Any] | None:
    if best is None:
        return None
    return {"span_id": f"{best[2]:016x}", "source": best[3], "text": best[1][:_PREVIEW]}


def _span_report(
    attributes: Mapping[str, Any], span_id: int, parent_id: int, is_root: bool, top_level: bool, gave: list[str]
) -> dict[str, Any]:
    facts = extract(attributes, span_id)
    found: dict[str, Any] = {}
    if facts is not None:
        for name in ("question", "answer", "llm_question", "llm_answer"):
            value = getattr(facts, name)
            if value is not None:
                found[name] = value[:_PREVIEW]
        for name in ("documents", "reranker_input", "reranker_output"):
            if getattr(facts, name):
                found[name] = len(getattr(facts, name))
        if facts.history or facts.llm_history:
            found["history_turns"] = len(facts.history or facts.llm_history or [])
    kind = attributes.get(KIND)
    return {
        "span_id": f"{span_id:016x}",
        "parent_span_id": f"{parent_id:016x}" if parent_id else None,
        "root": is_root,
        "top_level": top_level,  # False: a step inside a chain, whose input and output are not read
        "kind": kind if isinstance(kind, str) else None,
        "found": found,
        "gave": gave,
    }
