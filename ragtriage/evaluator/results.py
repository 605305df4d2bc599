"""Result types of an evaluation.

They are frozen and JSON-serialisable (the cache, the Redis queue and the CI
report all store them), and a metric a tier could not measure is ``None``:
nothing here ever invents a score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ragtriage.metrics_registry import ALL, BY_NAME

Verdict = Literal["pass", "fail", "uncertain"]
Tier = Literal["cache", "deterministic", "local", "heavy"]
Status = Literal["ok", "judge_error", "budget_exhausted"]
Severity = Literal["warning", "critical"]

TIERS: tuple[Tier, ...] = ("cache", "deterministic", "local", "heavy")
#: The tiers that score every answer they decide, pass or fail.
JUDGE_TIERS: tuple[Tier, ...] = ("local", "heavy")
#: Spellings of earlier versions, read from old cache entries and calibration files.
RENAMED = {"recall": "context_recall", "precision": "context_precision"}


def _default(name: str) -> float:
    threshold = BY_NAME[name].threshold
    assert threshold is not None
    return threshold


@dataclass(frozen=True, slots=True)
class RAGEvaluationThresholds:
    """Minimum acceptable value of each metric (inclusive); one field per metric of
    :data:`ragtriage.metrics_registry.THRESHOLD_METRICS`, defaults from that table."""

    faithfulness: float = _default("faithfulness")
    relevance: float = _default("relevance")
    answer_quality: float = _default("answer_quality")
    context_recall: float = _default("context_recall")
    context_precision: float = _default("context_precision")
    benefit_to_cost: float = _default("benefit_to_cost")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"RAGEvaluationThresholds.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"RAGEvaluationThresholds.{f.name} must be finite and >= 0, got {value!r}")
            if BY_NAME[f.name].unit_score and value > 1:
                raise ValueError(f"RAGEvaluationThresholds.{f.name} must be in [0, 1], got {value!r}")


def alert_severity(value: float, threshold: float) -> Severity:
    """SynapseKit's rule for a value below its threshold: half-way down is still a warning."""
    return "warning" if value >= threshold * 0.5 else "critical"


@dataclass(frozen=True, slots=True)
class RAGAlert:
    """A metric of one evaluation below its threshold."""

    metric: str
    severity: Severity
    message: str
    recommendation: str
    value: float
    threshold: float


@dataclass(frozen=True, slots=True)
class RAGRemediationSuggestion:
    """What to change in the RAG app when a metric is low."""

    metric: str
    action: str
    rationale: str


@dataclass(frozen=True, slots=True)
class TierOutcome:
    """What one tier saw: its score (faithfulness, the hallucination signal) and its spend."""

    tier: Tier
    score: float | None
    status: Literal["ok", "error", "skipped"] = "ok"
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RAGEvaluationResult:
    """The outcome of evaluating one (question, contexts, answer) sample.

    ``certain_evidence`` holds the free tiers' findings that decided ``fail`` (rules measured right on real
    answers, see ``CERTAIN_RULES``); ``signals`` the findings that only ask a judge to check a term. ``notes``
    has both, marked "certain (rule): ..." and "signal (rule): ...", the certain first.

    A free-tier ``fail`` carries the score its evidence implies (``faithfulness`` 0 for a claim no context
    supports), but the free tiers never pass an answer, so such scores exist only on failures: anything that
    averages results (alert windows, OTel histograms, Phoenix's score charts, session scores) reads
    :meth:`scores`, which holds a judge's scores only."""

    sampled: bool
    sample_key: str | None
    question: str
    faithfulness: float | None = None
    context_recall: float | None = None
    context_precision: float | None = None
    relevance: float | None = None
    answer_quality: float | None = None
    retrieval_benefit: float | None = None
    benefit_to_cost: float | None = None
    verdict: Verdict = "uncertain"
    tier: Tier | None = None
    tier_scores: dict[str, float | None] = field(default_factory=dict)
    status: Status = "ok"
    error: str | None = None
    eval_cost_usd: float = 0.0
    eval_latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    alerts: list[RAGAlert] = field(default_factory=list)
    suggestions: list[RAGRemediationSuggestion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    certain_evidence: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    raw_response: str | None = None
    document_relevance: list[float | None] = field(default_factory=list)
    tiers: list[TierOutcome] = field(default_factory=list)

    @property
    def decided_by(self) -> Tier | None:
        """The tier whose verdict this is: ``tier``, except that a cache hit names the tier it was cached from."""
        if self.tier != "cache":
            return self.tier
        return next((t for t in reversed(JUDGE_TIERS) if t in self.tier_scores), "deterministic")

    @property
    def judged(self) -> bool:
        """Whether an LLM judge decided this result (itself or through the cache): its scores and verdict came from
        a tier that could as well have passed the answer."""
        return self.decided_by in JUDGE_TIERS

    def scores(self, names: Iterable[str] = ALL) -> dict[str, float]:
        """The scores of ``names`` that may go into a mean over results: a judge's, never the free tiers' implied
        zeros (a mean of those would average the failures alone).

        Example::

            faithful = [s["faithfulness"] for r in results if "faithfulness" in (s := r.scores())]
        """
        if not self.judged:
            return {}
        return {name: value for name in names if (value := getattr(self, name)) is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RAGEvaluationResult:
        """Inverse of :meth:`to_dict`; unknown keys are ignored so old cache entries still load."""
        known = {f.name for f in fields(cls)}
        kwargs = {RENAMED.get(k, k): v for k, v in data.items() if RENAMED.get(k, k) in known}
        kwargs["alerts"] = [RAGAlert(**a) for a in data.get("alerts", ())]
        kwargs["suggestions"] = [RAGRemediationSuggestion(**s) for s in data.get("suggestions", ())]
        kwargs["tiers"] = [TierOutcome(**t) for t in data.get("tiers", ())]
        return cls(**kwargs)
