"""The deterministic tier: checks that need no network and take microseconds.

It decides only ``fail``, and only by the rules in ``CERTAIN_RULES``, each measured
right on answers written by real LLMs and labelled by people: an empty answer, a
refusal although the contexts cover the question, a missing or dangling citation
the user's rule demands, a number that no context (nor the question) states in any
spelling, a date or a count that changes a context's, a context statement with its
negation flipped, and the wrong pick of a choice question the contexts' dates
settle. Each finding names its rule and the fact to check. Everything else (names,
derived values, other spellings, rare words) is a signal for the LLM tiers: real
models write what their passage implies, and only a judge can say it is right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragtriage.checks._contradictions import negation_flip, wrong_choice
from ragtriage.checks._normalize import fold
from ragtriage.checks.grounding import SMALL_NUMBER, EvidenceIndex, GroundingReport, check_grounding

_REFUSAL = re.compile(
    r"\b(?:i\s+(?:do\s+not|don['’]t)\s+know|i\s+am\s+not\s+sure|i['’]m\s+not\s+sure"
    r"|(?:cannot|can['’]t|unable\s+to)\s+(?:be\s+)?(?:answer|determine|find|tell|say)"
    r"|(?:no|not\s+enough)\s+(?:information|data|details?|mention)"
    r"|(?:is|are)\s+not\s+(?:mentioned|provided|specified|stated|given|available)"
    r"|(?:the\s+)?(?:context|documents?|passages?|sources?)\s+(?:do(?:es)?\s+not|don['’]t)\s+(?:say|mention|contain|provide)"
    r"|there\s+is\s+no\s+(?:information|answer|mention|record))\b",
)  # lower-case only: it runs on the folded, lowered answer
#: Every alternative of _REFUSAL contains one of these; most answers contain none, and skip the regex.
_REFUSAL_WORDS = ("know", "sure", "answer", "determine", "find", "tell", "say", "information", "data", "detail",
                  "mention", "provide", "specified", "stated", "given", "available", "contain", "record")  # fmt: skip
_INJECTION = re.compile(
    r"(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|prior|above|earlier|preceding)"
    r"|(?:new|updated)\s+instructions?\s*:|you\s+are\s+now\s+(?:a|an|the)\b|system\s+prompt"
    r"|(?:output|give|assign|return|rate\s+(?:this|it|the\s+answer))\b[^.\n]{0,40}\b(?:score|rating|1\.0|10/10)"
    r"|\"?faithfulness\"?\s*:\s*1",  # lower-case only: it runs on lowered text (IGNORECASE costs ~2.7x)
)
#: Every alternative of _INJECTION contains one of these; most contexts contain none, and skip the regex.
_INJECTION_WORDS = ("ignore", "disregard", "forget", "instruction", "now ", "now\n", "now\t", "prompt", "score",
                    "rating", "1.0", "10/10", "faithfulness")  # fmt: skip
_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}")
_QUESTION_STOP = frozenset(
    """
    what which when where whose does did have that this with from were many much long that there their
    about into they them than then also
    """.split()
)

_INJECTION_NOTE = "a retrieved context contains instruction-like text (possible prompt injection)"
#: A refusal is only certain when the contexts hold at least this share of the question's content words.
ANSWERABLE_OVERLAP = 0.6
__all__ = [
    "ANSWERABLE_OVERLAP",
    "CERTAIN_RULES",
    "SMALL_NUMBER",
    "DeterministicChecker",
    "DeterministicReport",
    "Finding",
]


#: The rules whose finding ends the cascade with ``fail``: each was right on at least 99% of the answers
#: it fired on, and failed no clean answer, on answers written by real LLMs and labelled by people
#: (FaithBench, CLIFF; see docs/benchmarks.md, "Free tiers per rule", and bench/free_tiers.py). Every
#: other rule's finding is a signal: the judge is asked to check it, or, without a judge, it is reported
#: and the verdict stays ``uncertain``.
CERTAIN_RULES = frozenset(
    ("empty_answer", "refusal", "citation", "unsupported_number", "date_conflict", "count_conflict",
     "wrong_choice", "negation_flip")
)  # fmt: skip


#: Certain rules about the answer's form, not its claims: they imply nothing about faithfulness.
_NOT_ABOUT_FAITHFULNESS = frozenset(("empty_answer", "refusal", "citation"))


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of evidence against the answer: the ``rule`` that found it, a ``note`` naming the fact to
    check, and whether it is ``certain`` (the rule is in :data:`CERTAIN_RULES`) or a signal."""

    rule: str
    note: str
    certain: bool

    def __str__(self) -> str:
        return f"{'certain' if self.certain else 'signal'} ({self.rule}): {self.note}"


@dataclass(frozen=True, slots=True)
class DeterministicReport:
    """What the checks found. Certain ``findings`` (the ``failures``) decide ``fail``; the others (the
    ``signals``) send the sample up the cascade, with the terms for the judge to check."""

    findings: tuple[Finding, ...]
    grounding: GroundingReport
    empty_answer: bool = False
    refusal: bool = False
    injection: bool = False

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(f.note for f in self.findings if f.certain)

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(f.note for f in self.findings if not f.certain)

    @property
    def decided_fail(self) -> bool:
        return any(f.certain for f in self.findings)

    @property
    def unfaithful(self) -> tuple[str, ...]:
        """The certain findings that the answer states what the contexts do not: faithfulness 0, and why."""
        return tuple(str(f) for f in self.findings if f.certain and f.rule not in _NOT_ABOUT_FAITHFULNESS)


class DeterministicChecker:
    """Configurable cheap checks; one instance is reused for every sample (it holds no state).

    ``unsupported_entities_to_fail``: 0 (the default) leaves a name found in no context a signal for the
    judge, because real LLM answers name what their passage implies ("Eddie Howe" for "Howe"); 1 makes it
    a certain ``fail``, for apps whose answers copy their contexts' names (measure it on your own answers
    first: ``bench/free_tiers.py`` reports the rule's precision on labelled sets).
    """

    def __init__(
        self,
        *,
        min_answer_chars: int = 2,
        citation_pattern: str | re.Pattern[str] | None = None,
        unsupported_entities_to_fail: int = 0,
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
        return f"det3:{self.min_answer_chars}:{self.unsupported_entities_to_fail}:{pattern}"

    def check(self, question: str, answer: str, contexts: Sequence[str]) -> DeterministicReport:
        findings: list[Finding] = []
        stripped = fold(answer.strip())
        evidence = EvidenceIndex.build(contexts)
        asked = EvidenceIndex(fold(question))
        grounding = check_grounding(stripped, evidence, asked)
        injection = _looks_injected(evidence.lowered)
        if injection:
            findings.append(_signal("injection", _INJECTION_NOTE))

        if len(stripped) < self.min_answer_chars:
            what = "empty" if not stripped else f"{len(stripped)} characters, under {self.min_answer_chars}"
            findings.append(_finding("empty_answer", f"answer is {what}"))
            return DeterministicReport(tuple(findings), grounding, empty_answer=True, injection=injection)

        lowered = stripped.lower()
        refusal = (
            len(stripped) < 300
            and any(map(lowered.__contains__, _REFUSAL_WORDS))
            and _REFUSAL.search(lowered) is not None
        )
        if refusal:
            overlap = _question_coverage(asked.text, evidence)
            if overlap is not None and overlap >= ANSWERABLE_OVERLAP:
                findings.append(
                    _finding(
                        "refusal",
                        f"answer declines to answer although the contexts cover {overlap:.0%} of the question's terms",
                    )
                )
            else:
                findings.append(_signal("declines", "answer declines to answer"))

        if self.citation_pattern is not None:
            findings.extend(_finding("citation", note) for note in self._citation_failures(stripped, len(contexts)))

        if grounding.hard_numbers:
            numbers = _quote(grounding.hard_numbers)
            findings.append(_finding("unsupported_number", f"answer states {numbers}, found in no context"))
        elif grounding.unsupported_numbers:
            numbers = _quote(grounding.unsupported_numbers)
            findings.append(_signal("small_number", f"answer states {numbers}, found in no context"))
        findings.extend(_finding("date_conflict", note) for note in grounding.date_conflicts)
        findings.extend(_finding("count_conflict", note) for note in grounding.count_conflicts)
        findings.extend(_signal("derived", note) for note in grounding.derived)
        findings.extend(_signal("variant", note) for note in grounding.variants)
        entities = grounding.unsupported_entities
        if entities:
            note = "answer names " + _quote(entities) + ", found in no context"
            opted_in = 0 < self.unsupported_entities_to_fail <= len(entities)
            findings.append(Finding("unsupported_name", note, opted_in))
        if grounding.unsupported_words:
            findings.append(
                _signal("rare_word", "answer uses " + _quote(grounding.unsupported_words) + ", found in no context")
            )
        if not any(f.certain for f in findings) and not refusal:
            choice = wrong_choice(asked.text, stripped, evidence.text)
            if choice:
                findings.append(_finding("wrong_choice", choice))
            else:
                flip = negation_flip(lowered, evidence)
                if flip:
                    findings.append(_finding("negation_flip", flip))
        return DeterministicReport(tuple(findings), grounding, refusal=refusal, injection=injection)

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


def _finding(rule: str, note: str) -> Finding:
    return Finding(rule, note, rule in CERTAIN_RULES)


def _signal(rule: str, note: str) -> Finding:
    return Finding(rule, note, False)


def _looks_injected(lowered: str) -> bool:
    """The regex is the judge; a plain substring scan of the lowered contexts first skips it for the vast
    majority, and where a prefilter word is found only the text around it is searched."""
    for word in _INJECTION_WORDS:
        at = lowered.find(word)
        while at >= 0:
            if _INJECTION.search(lowered, max(0, at - 60), at + 80):
                return True
            at = lowered.find(word, at + 1)
    return False


def _question_coverage(question: str, evidence: EvidenceIndex) -> float | None:
    terms = {w for w in _CONTENT_WORD.findall(question.lower()) if w not in _QUESTION_STOP}
    if not terms:
        return None
    found = sum(1 for t in terms if evidence.has_prefix(t[:5]) or evidence.has(t))
    return found / len(terms)


def _quote(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
