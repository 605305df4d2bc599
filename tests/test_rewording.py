"""The rewording suite: faithful rewordings never fail; near-misses that change a checkable fact do.

The fixture (tests/data/rewordings.json) groups, per shape of rewording (accents, date formats, number
words, unit conversions, abbreviations, possessives, plurals, demonyms, hyphenation, transliteration,
...), one context, faithful answers, and near-misses: ``certain`` ones change a fact the contexts state
(a year, a name, a day, a negation, a dated choice) and must be reported, as a failure where the rule that
finds them is certain on real answers (``CERTAIN_RULES``) and else as a signal naming the term for the judge;
``other`` ones (a derived-looking value, a small number) may stay uncertain.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtriage import RAGEvaluator
from ragtriage.checks import DeterministicChecker
from ragtriage.checks.deterministic import CERTAIN_RULES

GROUPS = json.loads((Path(__file__).parent / "data" / "rewordings.json").read_text(encoding="utf-8"))["groups"]
FAITHFUL = [(g["shape"], g["context"], g["question"], a) for g in GROUPS for a in g["faithful"]]
CERTAIN = [(g["shape"], g["context"], g["question"], a) for g in GROUPS for a in g["certain"]]
CHECKER = DeterministicChecker()


def test_the_suite_is_as_large_as_the_issue_asks() -> None:
    assert len(FAITHFUL) >= 100
    assert len(CERTAIN) + sum(len(g["other"]) for g in GROUPS) >= 70
    assert len({g["shape"] for g in GROUPS}) >= 20


@pytest.mark.parametrize(("shape", "context", "question", "answer"), FAITHFUL, ids=[f[3][:40] for f in FAITHFUL])
def test_faithful_rewording_never_fails(shape: str, context: str, question: str, answer: str) -> None:
    report = CHECKER.check(question, answer, [context])
    assert not report.failures, f"{shape}: {answer!r} failed: {report.failures}"


@pytest.mark.parametrize(("shape", "context", "question", "answer"), CERTAIN, ids=[c[3][:40] for c in CERTAIN])
def test_certain_near_miss_is_reported_with_a_checkable_reason(
    shape: str, context: str, question: str, answer: str
) -> None:
    report = CHECKER.check(question, answer, [context])
    caught = [f for f in report.findings if f.rule != "injection"]
    assert caught, f"{shape}: {answer!r} was not caught"
    assert all(f.certain is (f.rule in CERTAIN_RULES) for f in caught)


async def test_free_tiers_never_pass_and_derived_values_are_signals() -> None:
    evaluator = RAGEvaluator(sample_rate=1.0)
    result = await evaluator.evaluate("How long is the flight?", "1.5 hours.", ["The flight takes 90 minutes."])
    assert (result.verdict, result.tier) == ("uncertain", "deterministic")
    assert any("90" in n and "1.5" in n for n in result.notes)  # the note says what it could be derived from
    verdicts = set()
    for _, context, question, answer in FAITHFUL[:40]:
        verdicts.add((await evaluator.evaluate(question, answer, [context])).verdict)
    assert "pass" not in verdicts
