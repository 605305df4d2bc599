"""How far to trust each tier: agreement with human labels, and thresholds for a target precision.

Every tier judges every labelled item on its own (not only the items the cascade would route to it), so
each tier's numbers are comparable. The positive class is "hallucinated" (any fail label). A tier that
does not decide an item (the deterministic tier on most items, a judge error) predicts "undecided":
accuracy and kappa are over decided items, recall is over all hallucinated items (undecided = missed).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ragtriage.dashboards.agreement import human_agreement, labelled, prediction
from ragtriage.dashboards.sources import EvalRecord
from ragtriage.evaluator import RAGEvaluator
from ragtriage.evaluator.calibration import Calibration, load_calibration
from ragtriage.gate.budget import BudgetGuard
from ragtriage.gate.datasets import Item
from ragtriage.judges.base import Judge, JudgeError
from ragtriage.stats import Prediction, TierStats, empty_confusion


@dataclass(frozen=True, slots=True)
class TierScore:
    prediction: Prediction
    score: float | None = None
    confidence: float | None = None


def tier_stats(tier: str, items: Sequence[Item], scores: Sequence[TierScore]) -> TierStats:
    confusion = empty_confusion()
    for item, s in zip(items, scores, strict=True):
        confusion["hallucinated" if item.is_hallucination else "faithful"][s.prediction] += 1
    return TierStats(tier, confusion)


def predict(score: float, threshold: float) -> Prediction:
    return "hallucinated" if score < threshold else "faithful"


async def collect(
    evaluator: RAGEvaluator, items: Sequence[Item], *, concurrency: int = 4, budget_usd: float | None = None
) -> dict[str, list[TierScore | None]]:
    """Each configured tier's judgement of every item (judges at ``evaluator.thresholds.faithfulness``).

    With ``budget_usd``, a judge call starts only while the spend so far plus the calls in flight at the
    costliest price seen stays within it (as ``ragtriage ci`` does); an item no judge call was started for
    is ``None`` in that tier's list: not judged, which is not the same as undecided."""
    budget = BudgetGuard(budget_usd)
    threshold = evaluator.thresholds.faithfulness
    out: dict[str, list[TierScore | None]] = {"deterministic": []}
    for item in items:
        report = evaluator.deterministic.check(item.question, item.answer, item.contexts)
        pred: Prediction = "hallucinated" if report.decided_fail else "undecided"
        out["deterministic"].append(TierScore(pred, report.grounding.score))
    gate = asyncio.Semaphore(concurrency)

    async def one(judge: Judge, item: Item, heavy: bool) -> TierScore | None:
        async with gate:
            if not budget.admits():
                return None
            with budget.call():
                try:
                    v = await judge.judge(item.question, item.answer, item.contexts, verify_claims=heavy)
                    cost = v.usage.cost_usd
                    score = TierScore(predict(v.faithfulness, threshold), v.faithfulness, v.output.confidence)
                except JudgeError as exc:
                    cost, score = exc.usage.cost_usd, TierScore("undecided")  # failed calls cost money too
        budget.spend(cost)
        evaluator.cost_tracker.record("heavy" if heavy else "local", usd=cost)  # what the budget alert reads
        return score

    for tier, judge in (("local", evaluator.local_judge), ("heavy", evaluator.heavy_judge)):
        if judge is not None:
            out[tier] = list(await asyncio.gather(*(one(judge, i, tier == "heavy") for i in items)))
    return out


def _precision_recall(items: Sequence[Item], flags: Sequence[bool]) -> tuple[float | None, float | None]:
    tp = sum(f and i.is_hallucination for i, f in zip(items, flags, strict=True))
    flagged = sum(flags)
    positives = sum(i.is_hallucination for i in items)
    return (tp / flagged if flagged else None, tp / positives if positives else None)


def recommend_threshold(
    items: Sequence[Item], scores: Sequence[TierScore], target: float
) -> tuple[float | None, float | None, float | None]:
    """The faithfulness threshold (a midpoint between observed scores) with the best recall whose precision is
    at least ``target``; returns (threshold, precision, recall), all None when no threshold reaches it."""
    pairs = [(i, s.score) for i, s in zip(items, scores, strict=True) if s.score is not None]
    values = sorted({v for _, v in pairs})
    best: tuple[float, float, float] | None = None
    for low, high in itertools.pairwise(values):
        t = round((low + high) / 2, 4)
        p, r = _precision_recall([i for i, _ in pairs], [v < t for _, v in pairs])
        if p is not None and r is not None and p >= target and (best is None or r > best[2]):
            best = (t, p, r)
    return best if best is not None else (None, None, None)


def recommend_confidence(
    items: Sequence[Item], scores: Sequence[TierScore], threshold: float, target: float
) -> tuple[float, float | None]:
    """The lowest confidence at which the local tier's kept verdicts (score cut at ``threshold``) agree with the
    labels at least ``target`` of the time, so it keeps as many verdicts as it can; 1.0 (always escalate) when
    no level does. Returns (confidence threshold, precision of the kept verdicts)."""
    judged = [(i, s) for i, s in zip(items, scores, strict=True) if s.score is not None and s.confidence is not None]
    for c in sorted({s.confidence for _, s in judged if s.confidence is not None}):
        kept = [(i, s) for i, s in judged if s.confidence is not None and s.confidence >= c]
        right = sum((s.score is not None and s.score < threshold) == i.is_hallucination for i, s in kept)
        if right / len(kept) >= target:
            return (c, right / len(kept))
    return (1.0, None)


@dataclass
class CalibrationReport:
    target_precision: float
    tiers: dict[str, TierStats]
    faithfulness: float | None
    confidence_threshold: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        thresholds = {} if self.faithfulness is None else {"faithfulness": self.faithfulness}
        return {
            "version": 1,
            "target_precision": self.target_precision,
            "tiers": {t: {**s.metrics(), "confusion": s.confusion} for t, s in self.tiers.items()},
            "recommended": {"confidence_threshold": self.confidence_threshold, "thresholds": thresholds},
            "notes": self.notes,
        }


def calibrate(
    items: Sequence[Item],
    scores: dict[str, list[TierScore | None]],
    *,
    target_precision: float = 0.9,
    current: float = 0.7,
) -> CalibrationReport:
    """Per-tier agreement plus recommendations; ``current`` is the faithfulness threshold the scores were cut at.

    A tier's numbers cover the items it judged (``None`` = not judged: a budget stop), and say so."""
    notes: list[str] = []
    judged: dict[str, tuple[list[Item], list[TierScore]]] = {}
    for tier, tier_scores in scores.items():
        pairs = [(i, s) for i, s in zip(items, tier_scores, strict=True) if s is not None]
        judged[tier] = ([i for i, _ in pairs], [s for _, s in pairs])
        if len(pairs) < len(items):
            notes.append(
                f"the budget stopped the {tier} tier after {len(pairs)} of {len(items)} items: "
                "its numbers and recommendations cover those only"
            )
    tiers = {t: tier_stats(t, *judged[t]) for t in scores}
    source = "local" if "local" in scores else "heavy" if "heavy" in scores else None
    faith = conf = None
    if source is None:
        notes.append("no LLM judge configured: only the deterministic tier was measured, nothing to recommend")
    else:
        faith, p, r = recommend_threshold(*judged[source], target_precision)
        if faith is None:
            notes.append(f"no faithfulness threshold of the {source} tier reaches precision {target_precision:.0%}")
        else:
            notes.append(f"faithfulness < {faith} from the {source} tier: precision {p:.1%}, recall {r:.1%}")
        if "local" in scores:
            conf, cp = recommend_confidence(*judged["local"], faith if faith is not None else current, target_precision)
            notes.append(
                f"local verdicts with confidence >= {conf} agree with the labels {cp:.1%} of the time"
                if cp is not None
                else "no confidence level makes the local tier reach the target precision: always escalate (1.0)"
            )
    return CalibrationReport(target_precision, tiers, faith, conf, notes)


def calibrate_from_records(
    records: Sequence[EvalRecord], *, target_precision: float = 0.9, source: str = "Phoenix"
) -> CalibrationReport:
    """Calibration from production: ragtriage's own annotations against reviewers' ``human_verdict`` labels.

    Agreement per deciding tier (and ``all``), per metric (``metric:<name>``, the metric's own pass/fail) and
    for the auditor; the faithfulness threshold recommended from the labelled traces' faithfulness scores (the
    score of the tier that decided each). The confidence threshold is not recommended: the annotations do not
    carry the local judge's confidence (``calibrate --labels`` measures it)."""
    people = labelled(records)
    agreement = human_agreement(records)
    tiers = {
        **agreement["tiers"],
        **{f"metric:{name}": stats for name, stats in agreement["metrics"].items()},
        **agreement["auditor"],
    }
    notes = [f"{len(people)} human-labelled traces of {len(records)} evaluated ones in {source}"]
    scored = [r for r in people if r.scores.get("faithfulness") is not None]
    items = [
        Item(id=r.span_id or str(i), question=r.question, contexts=(), answer="", label=r.human_verdict or "",
             category="phoenix")
        for i, r in enumerate(scored)
    ]  # fmt: skip
    scores = [TierScore(prediction(r.verdict), r.scores["faithfulness"]) for r in scored]
    faith, p, r = recommend_threshold(items, scores, target_precision)
    if not people:
        notes.append("no trace has a human_verdict label yet: nothing to measure or recommend")
    elif faith is None:
        notes.append(f"no faithfulness threshold reaches precision {target_precision:.0%} on the labelled traces")
    else:
        assert p is not None and r is not None
        notes.append(f"faithfulness < {faith} on {len(scored)} labelled traces: precision {p:.1%}, recall {r:.1%}")
    notes.append("confidence_threshold not recommended: the annotations carry no local-judge confidence")
    return CalibrationReport(target_precision, tiers, faith, None, notes)


__all__ = ["Calibration", "CalibrationReport", "TierStats", "calibrate", "calibrate_from_records", "load_calibration"]
