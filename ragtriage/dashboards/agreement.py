"""How far ragtriage's verdicts agree with the tier above (audits) and with people (``human_verdict``).

Both read the same :class:`~ragtriage.dashboards.sources.EvalRecord` list, so ``ragtriage report`` and
``ragtriage calibrate --from-phoenix`` show the same numbers. Against people, every deciding tier, every
metric's own label and the auditor get one :class:`~ragtriage.stats.TierStats` each (precision and recall of
``fail``, Cohen's kappa, each with its interval, and the confusion table).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ragtriage.dashboards.sources import EvalRecord
from ragtriage.evaluator.audit import AUDITED_TIERS, Agreement, agreement_of
from ragtriage.stats import Prediction, TierStats, empty_confusion

#: Human labels ragtriage reads: a reviewer says whether the answer holds up.
HUMAN_LABELS = ("pass", "fail")


def prediction(verdict: str | None) -> Prediction:
    """A verdict or a metric's label as a prediction of the positive class (a ``fail``)."""
    return "hallucinated" if verdict == "fail" else "faithful" if verdict == "pass" else "undecided"


def labelled(records: Iterable[EvalRecord]) -> list[EvalRecord]:
    """The records a reviewer labelled ``pass`` or ``fail``."""
    return [r for r in records if r.human_verdict in HUMAN_LABELS]


def _stats(name: str, pairs: Iterable[tuple[str, str | None]]) -> TierStats:
    confusion = empty_confusion()
    for human, verdict in pairs:
        confusion["hallucinated" if human == "fail" else "faithful"][prediction(verdict)] += 1
    return TierStats(name, confusion)


def human_agreement(records: Sequence[EvalRecord]) -> dict[str, dict[str, TierStats]]:
    """Agreement with the human labels among ``records``: ``{"tiers": ..., "metrics": ..., "auditor": ...}``.

    ``tiers``: each deciding tier on the traces it decided, plus ``all``; ``metrics``: each metric's own
    pass/fail label; ``auditor``: the audit verdicts, on the audited traces."""
    people = labelled(records)
    tiers = {"all": _stats("all", ((r.human_verdict or "", r.verdict) for r in people))}
    for tier in sorted({r.tier for r in people}):
        tiers[tier] = _stats(tier, ((r.human_verdict or "", r.verdict) for r in people if r.tier == tier))
    metrics = {
        name: _stats(name, ((r.human_verdict or "", r.labels[name]) for r in people if name in r.labels))
        for name in sorted({n for r in people for n in r.labels})
    }
    audited = [r for r in people if r.audit_verdict is not None]
    auditor = {"auditor": _stats("auditor", ((r.human_verdict or "", r.audit_verdict) for r in audited))}
    return {"tiers": tiers, "metrics": metrics, "auditor": auditor if audited else {}}


def audit_agreement(records: Sequence[EvalRecord]) -> dict[str, Agreement]:
    """Each audited tier's agreement with its auditor, from the ``audit_verdict`` annotations."""
    return {
        tier: agreement_of(tier, ((r.verdict, r.audit_verdict) for r in records if r.tier == tier and r.audit_verdict))
        for tier in AUDITED_TIERS
    }


__all__ = ["HUMAN_LABELS", "audit_agreement", "human_agreement", "labelled", "prediction"]
