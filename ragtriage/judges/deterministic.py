"""The deterministic tier: checks that need no network and take microseconds.

It decides only what it can prove: an empty answer, a refusal although the
contexts cover the question, a missing or dangling citation the user's rule
demands, and a number in the answer that no context (or the question) has.
Everything else it reports as signals and leaves to the LLM tiers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragtriage.judges.grounding import EvidenceIndex, GroundingReport, check_grounding

_REFUSAL = re.compile(
    r"\b(?:i\s+(?:do\s+not|don['’]t)\s+know|i\s+am\s+not\s+sure|i['’]m\s+not\s+sure"
    r"|(?:cannot|can['’]t|unable\s+to)\s+(?:be\s+)?(?:answer|determine|find|tell|say)"
    r"|(?:no|not\s+enough)\s+(?:information|data|details?|mention)"
    r"|(?:is|are)\s+not\s+(?:mentioned|provided|specified|stated|given|available)"
    r"|(?:the\s+)?(?:context|documents?|passages?|sources?)\s+(?:do(?:es)?\s+not|don['’]t)\s+(?:say|mention|contain|provide)"
    r"|there\s+is\s+no\s+(?:information|answer|mention|record))\b",
    re.IGNORECASE,
)
_INJECTION = re.compile(
    r"(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|prior|above|earlier|preceding)"
    r"|(?:new|updated)\s+instructions?\s*:|you\s+are\s+now\s+(?:a|an|the)\b|system\s+prompt"
    r"|(?:output|give|assign|return|rate\s+(?:this|it|the\s+answer))\b[^.\n]{0,40}\b(?:score|rating|1\.0|10/10)"
    r"|\"?faithfulness\"?\s*:\s*1",  # lower-case only: it runs on lowered text (IGNORECASE costs ~2.7x)
)
#: Every alternative of _INJECTION contains one of these; most contexts contain none, and skip the regex.
_INJECTION_WORDS = ("ignore", "disregard", "forget", "instruction", " now", "\nnow", "\tnow", "prompt", "score",
                    "rating", "1.0", "10/10", "faithfulness")  # fmt: skip
_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}")
_QUESTION_STOP = frozenset(
    """
    what which when where whose does did have that this with from were many much long that there their
    about into they them than then also
    """.split()
)

#: A refusal is only certain when the contexts hold at least this share of the question's content words.
ANSWERABLE_OVERLAP = 0.6
#: Integers up to this are often paraphrased ("two films"); a missing one is a signal, not proof.
SMALL_NUMBER = 10


@dataclass(frozen=True, slots=True)
class DeterministicReport:
    """What the checks found. ``failures`` are certain; ``signals`` send the sample up the cascade."""

    failures: tuple[str, ...]
    signals: tuple[str, ...]
    grounding: GroundingReport
    empty_answer: bool = False
    refusal: bool = False
    injection: bool = False

    @property
    def decided_fail(self) -> bool:
        return bool(self.failures)


class DeterministicChecker:
    """Configurable cheap checks; one instance is reused for every sample (it holds no state)."""

    def __init__(
        self,
        *,
        min_answer_chars: int = 2,
        citation_pattern: str | re.Pattern[str] | None = None,
        unsupported_entities_to_fail: int = 1,
    ) -> None:
        if isinstance(min_answer_chars, bool) or not isinstance(min_answer_chars, int) or min_answer_chars < 1:
            raise ValueError(f"min_answer_chars must be an int >= 1, got {min_answer_chars!r}")
        if citation_pattern is not None and not isinstance(citation_pattern, str | re.Pattern):
            raise TypeError(f"citation_pattern must be a regex string or re.Pattern, got {citation_pattern!r}")
        if isinstance(citation_pattern, str):
            try:
                citation_pattern = re.compile(citation_pattern)
            except re.error as exc:
                raise ValueError(f"citation_pattern is not a valid regex: {exc}") from exc
        if (
            isinstance(unsupported_entities_to_fail, bool)
            or not isinstance(unsupported_entities_to_fail, int)
            or unsupported_entities_to_fail < 0
        ):
            raise ValueError(
                f"unsupported_entities_to_fail must be an int >= 0 (0 disables), got {unsupported_entities_to_fail!r}"
            )
        self.min_answer_chars = min_answer_chars
        self.citation_pattern: re.Pattern[str] | None = citation_pattern
        self.unsupported_entities_to_fail = unsupported_entities_to_fail

    @property
    def fingerprint(self) -> str:
        """Part of the cache key: a different rule set must not reuse old verdicts."""
        pattern = self.citation_pattern.pattern if self.citation_pattern else ""
        return f"det1:{self.min_answer_chars}:{self.unsupported_entities_to_fail}:{pattern}"

    def check(self, question: str, answer: str, contexts: Sequence[str]) -> DeterministicReport:
        failures: list[str] = []
        signals: list[str] = []
        stripped = answer.strip()
        evidence = EvidenceIndex.build(contexts)
        grounding = check_grounding(stripped, evidence, EvidenceIndex.build((question,)))
        injection = _looks_injected(contexts)
        if injection:
            signals.append("a retrieved context contains instruction-like text (possible prompt injection)")

        if len(stripped) < self.min_answer_chars:
            what = "empty" if not stripped else f"{len(stripped)} characters, under {self.min_answer_chars}"
            failures.append(f"answer is {what}")
            return DeterministicReport(
                tuple(failures), tuple(signals), grounding, empty_answer=True, injection=injection
            )

        refusal = bool(_REFUSAL.search(stripped)) and len(stripped) < 300
        if refusal:
            overlap = _question_coverage(question, evidence)
            if overlap is not None and overlap >= ANSWERABLE_OVERLAP:
                failures.append(
                    f"answer declines to answer although the contexts cover {overlap:.0%} of the question's terms"
                )
            else:
                signals.append("answer declines to answer")

        if self.citation_pattern is not None:
            failures.extend(self._citation_failures(stripped, len(contexts)))

        hard_numbers = [n for n in grounding.unsupported_numbers if not _is_small_int(n)]
        if hard_numbers:
            failures.append("answer states " + _quote(hard_numbers) + ", found in no context")
        elif grounding.unsupported_numbers:
            signals.append("answer states " + _quote(grounding.unsupported_numbers) + ", found in no context")
        entities = grounding.unsupported_entities
        if entities and self.unsupported_entities_to_fail and len(entities) >= self.unsupported_entities_to_fail:
            failures.append("answer names " + _quote(entities) + ", found in no context")
        elif entities:
            signals.append("answer names " + _quote(entities) + ", found in no context")
        if grounding.unsupported_words:
            signals.append("answer uses " + _quote(grounding.unsupported_words) + ", found in no context")
        return DeterministicReport(tuple(failures), tuple(signals), grounding, refusal=refusal, injection=injection)

    def _citation_failures(self, answer: str, n_contexts: int) -> list[str]:
        assert self.citation_pattern is not None
        matches = list(self.citation_pattern.finditer(answer))
        if not matches:
            return [f"answer has no citation matching {self.citation_pattern.pattern!r}"]
        dangling = [
            m.group(1)
            for m in matches
            if m.lastindex and m.group(1) and m.group(1).isdigit() and not 1 <= int(m.group(1)) <= n_contexts
        ]
        if dangling:
            return [f"answer cites {_quote(dangling)} but only {n_contexts} contexts were retrieved"]
        return []

    def __repr__(self) -> str:
        return f"DeterministicChecker({self.fingerprint})"


def _looks_injected(contexts: Sequence[str]) -> bool:
    """The regex is the judge; a plain substring scan first skips it for the vast majority of contexts."""
    for context in contexts:
        lowered = context.lower()
        if any(map(lowered.__contains__, _INJECTION_WORDS)) and _INJECTION.search(lowered):
            return True
    return False


def _question_coverage(question: str, evidence: EvidenceIndex) -> float | None:
    terms = {w for w in _CONTENT_WORD.findall(question.lower()) if w not in _QUESTION_STOP}
    if not terms:
        return None
    found = sum(1 for t in terms if t[:5] in evidence.stems or t in evidence.words)
    return found / len(terms)


def _is_small_int(raw: str) -> bool:
    return raw.isdigit() and int(raw) <= SMALL_NUMBER


def _quote(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
