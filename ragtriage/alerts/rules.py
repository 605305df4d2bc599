"""Alert rules over sliding windows of evaluation results.

A rule looks at the current window (the last ``window_size`` results, no older
than ``window_s``) and answers: the value it watches, the limit, and whether
the limit is crossed. It never decides on fewer than ``min_samples`` results.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ragtriage.evaluator.audit import Agreement
from ragtriage.evaluator.cost import CostTracker
from ragtriage.evaluator.results import TIERS, RAGEvaluationResult, RAGEvaluationThresholds
from ragtriage.metrics_registry import BY_NAME, SCORES

Comparison = Literal["below", "above"]
_EPS = 1e-4


@dataclass(frozen=True, slots=True)
class Observation:
    """The part of a result the rules need (results themselves can be large)."""

    at: float
    tier: str | None
    status: str
    verdict: str
    scores: dict[str, float | None]
    cost_usd: float

    @classmethod
    def of(cls, result: RAGEvaluationResult, at: float) -> Observation:
        scores: dict[str, float | None] = dict(result.scores(SCORES))  # a judge's: the free tiers score only fails
        return cls(at, result.tier, result.status, result.verdict, scores, result.eval_cost_usd)


@dataclass(frozen=True, slots=True)
class Check:
    """A rule's reading of a window."""

    value: float
    threshold: float
    breached: bool
    samples: int
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Rule:
    """Base of every rule: identity, window and lifecycle settings."""

    name: str
    window_size: int = 200
    window_s: float = 900.0
    min_samples: int = 20
    cooldown_s: float = 1800.0
    comparison: Comparison = "below"
    recommendation: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"rule name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.recommendation, str):
            raise ValueError(f"{self.name}: recommendation must be a string, got {self.recommendation!r}")
        for attr in ("window_size", "min_samples"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {attr} must be a positive int, got {value!r}")
        for attr in ("window_s", "cooldown_s"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{self.name}: {attr} must be a number >= 0, got {value!r}")

    def check(self, window: Sequence[Observation], baseline: Sequence[Observation]) -> Check | None:
        raise NotImplementedError

    def severity(self, value: float, threshold: float) -> Literal["warning", "critical"]:
        """SynapseKit's rule: below a threshold, at least half of it is a warning; above a limit, mirrored."""
        if self.comparison == "below":
            return "warning" if value >= threshold * 0.5 else "critical"
        return "warning" if value <= threshold * 1.5 else "critical"


@dataclass(frozen=True, kw_only=True)
class MetricRule(Rule):
    """Mean (or a quantile) of a score over the window below its threshold."""

    metric: str
    threshold: float
    quantile: float | None = None

    def __post_init__(self) -> None:
        Rule.__post_init__(self)
        _check_metric(self.name, "metric", self.metric)
        _check_number(self.name, "threshold", self.threshold, high=1.0)
        if self.quantile is not None:
            _check_number(self.name, "quantile", self.quantile, high=1.0)
            if not 0 < self.quantile < 1:
                raise ValueError(f"{self.name}: quantile must be in (0, 1), got {self.quantile!r}")

    def check(self, window: Sequence[Observation], baseline: Sequence[Observation]) -> Check | None:
        values = [v for o in window if (v := o.scores.get(self.metric)) is not None]
        if len(values) < self.min_samples:
            return None
        value = _quantile(values, self.quantile) if self.quantile else sum(values) / len(values)
        stat = f"p{round(self.quantile * 100)}" if self.quantile else "mean"
        return Check(value, self.threshold, value < self.threshold, len(values), f"{stat} {self.metric}")


@dataclass(frozen=True, kw_only=True)
class ShareRule(Rule):
    """Share of results matching a predicate above a limit (fail verdicts, heavy tier, judge errors)."""

    limit: float
    what: str
    predicate: Callable[[Observation], bool] = field(repr=False)
    comparison: Comparison = "above"

    def __post_init__(self) -> None:
        Rule.__post_init__(self)
        _check_number(self.name, "limit", self.limit, high=1.0)

    def check(self, window: Sequence[Observation], baseline: Sequence[Observation]) -> Check | None:
        if len(window) < self.min_samples:
            return None
        share = sum(1 for o in window if self.predicate(o)) / len(window)
        return Check(share, self.limit, share > self.limit, len(window), self.what)


@dataclass(frozen=True, kw_only=True)
class TierDriftRule(Rule):
    """The tier mix and score distribution of the window against a baseline window.

    Tier mix: Jensen-Shannon distance (base 2, in [0, 1]). Scores: population
    stability index of ``metric`` over fixed bins. Fires when either crosses
    its limit; the value reported is the larger share of its own limit.
    """

    js_limit: float = 0.2
    psi_limit: float = 0.25
    metric: str = "faithfulness"
    comparison: Comparison = "above"

    def __post_init__(self) -> None:
        Rule.__post_init__(self)
        _check_number(self.name, "js_limit", self.js_limit, high=1.0)
        _check_number(self.name, "psi_limit", self.psi_limit)
        _check_metric(self.name, "metric", self.metric)
        for attr in ("js_limit", "psi_limit"):
            if getattr(self, attr) == 0:  # the drift check divides by both limits
                raise ValueError(f"{self.name}: {attr} must be > 0, got 0")

    def check(self, window: Sequence[Observation], baseline: Sequence[Observation]) -> Check | None:
        if len(window) < self.min_samples or len(baseline) < self.min_samples:
            return None
        js = js_distance(tier_mix(baseline), tier_mix(window))
        base_scores = [v for o in baseline if (v := o.scores.get(self.metric)) is not None]
        now_scores = [v for o in window if (v := o.scores.get(self.metric)) is not None]
        psi = (
            population_stability(base_scores, now_scores)
            if min(len(base_scores), len(now_scores)) >= self.min_samples
            else None
        )
        detail = f"tier-mix JS distance {js:.3f} (limit {self.js_limit})"
        if psi is not None:
            detail += f", {self.metric} PSI {psi:.3f} (limit {self.psi_limit})"
        if psi is not None and psi / self.psi_limit > js / self.js_limit:
            return Check(psi, self.psi_limit, psi > self.psi_limit or js > self.js_limit, len(window), detail)
        return Check(js, self.js_limit, js > self.js_limit or (psi or 0) > self.psi_limit, len(window), detail)


@dataclass(frozen=True, kw_only=True)
class GaugeRule(Rule):
    """A value read from outside the window (budget spent, dropped samples), above a limit."""

    limit: float
    what: str
    read: Callable[[], tuple[float, int] | None] = field(repr=False)
    comparison: Comparison = "above"

    def __post_init__(self) -> None:
        Rule.__post_init__(self)
        _check_number(self.name, "limit", self.limit)

    def check(self, window: Sequence[Observation], baseline: Sequence[Observation]) -> Check | None:
        reading = self.read()
        if reading is None:
            return None
        value, samples = reading
        if samples < self.min_samples:
            return None
        return Check(value, self.limit, value > self.limit, samples, self.what)


def _check_number(rule: str, attr: str, value: object, *, high: float | None = None) -> None:
    """A rule's limit or threshold: a number >= 0 (at most ``high``), so a typo fails when the rule is made,
    not on every evaluation after."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{rule}: {attr} must be a number >= 0, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{rule}: {attr} must be in [0, {high:g}], got {value!r}")


def _check_metric(rule: str, attr: str, value: object) -> None:
    if value not in SCORES:
        raise ValueError(f"{rule}: {attr} must be one of {', '.join(SCORES)}, got {value!r}")


def tier_mix(observations: Sequence[Observation]) -> list[float]:
    counts = Counter(o.tier for o in observations if o.tier is not None)
    total = sum(counts.values()) or 1
    return [counts.get(t, 0) / total for t in TIERS]


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance with log base 2: 0 for equal mixes, 1 for disjoint ones."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: Sequence[float]) -> float:
        return sum(a * math.log2(a / c) for a, c in zip(x, m, strict=True) if a > 0)

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


def population_stability(expected: Sequence[float], actual: Sequence[float], bins: int = 10) -> float:
    """PSI over ``bins`` equal-width bins of [0, 1]; empty bins are floored at a small share."""

    def shares(values: Sequence[float]) -> list[float]:
        counts = [0] * bins
        for v in values:
            counts[min(int(v * bins), bins - 1)] += 1
        return [max(c / len(values), _EPS) for c in counts]

    e, a = shares(expected), shares(actual)
    return sum((x - y) * math.log(x / y) for x, y in zip(a, e, strict=True))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class ShareKind:
    """A built-in share-above-a-limit rule: what it counts and what to do about it."""

    name: str
    what: str
    predicate: Callable[[Observation], bool]
    limit: float
    recommendation: str


SHARE_KINDS: dict[str, ShareKind] = {
    "fail_share": ShareKind(
        "fail_share_high",
        "share of fail verdicts",
        lambda o: o.verdict == "fail",
        0.30,
        "many answers fail: open the failing traces in Phoenix (filter answer = fail)",
    ),
    "heavy_share": ShareKind(
        "heavy_share_high",
        "share of evaluations decided by the heavy judge",
        lambda o: o.tier == "heavy",
        0.30,
        "the local judge is unsure more often: check the local judge model or lower confidence_threshold; "
        "see the Eval Vector Distribution dashboard",
    ),
    "judge_errors": ShareKind(
        "judge_error_rate_high",
        "share of evaluations that ended in judge_error",
        lambda o: o.status == "judge_error",
        0.10,
        "judges are failing: check the vLLM server and OpenAI status, timeouts and rate limits",
    ),
}


def share_rule(kind: str, *, limit: float | None = None, **settings: Any) -> ShareRule:
    """One of :data:`SHARE_KINDS` as a rule; ``settings`` override name, window, cooldown, recommendation."""
    spec = SHARE_KINDS[kind]
    settings.setdefault("name", spec.name)
    settings.setdefault("recommendation", spec.recommendation)
    return ShareRule(what=spec.what, predicate=spec.predicate, limit=spec.limit if limit is None else limit, **settings)


def default_rules(
    thresholds: RAGEvaluationThresholds | None = None,
    *,
    heavy_share_limit: float = 0.30,
    fail_share_limit: float = 0.30,
    judge_error_limit: float = 0.10,
    drift_js_limit: float = 0.2,
    window_size: int = 200,
    window_s: float = 900.0,
    min_samples: int = 20,
    cooldown_s: float = 1800.0,
) -> list[Rule]:
    """The rules a team gets without writing any: quality, heavy-vector share, drift, judge errors."""
    thresholds = thresholds or RAGEvaluationThresholds()
    common: dict[str, Any] = {
        "window_size": window_size,
        "window_s": window_s,
        "min_samples": min_samples,
        "cooldown_s": cooldown_s,
    }
    rules: list[Rule] = [
        MetricRule(
            name=f"{metric}_low",
            metric=metric,
            threshold=getattr(thresholds, metric),
            recommendation=BY_NAME[metric].alert_advice,
            **common,
        )
        for metric in SCORES
    ]
    limits = {"fail_share": fail_share_limit, "heavy_share": heavy_share_limit, "judge_errors": judge_error_limit}
    rules += [share_rule(kind, limit=limit, **common) for kind, limit in limits.items()]
    rules += [
        TierDriftRule(
            name="tier_distribution_drift",
            js_limit=drift_js_limit,
            recommendation=(
                "the mix of deciding tiers or the score distribution moved against the baseline window: "
                "did the app, the retriever, the local judge model or the traffic change?"
            ),
            **common,
        ),
    ]
    return rules


@dataclass(frozen=True, kw_only=True)
class CounterRateRule(Rule):
    """A rate from two growing counters (e.g. dropped / offered samples) over the last ``window_s``.

    ``read`` returns the counters' current totals; the rule keeps timestamped
    snapshots so the rate covers the window, not all time.
    """

    limit: float
    what: str
    read: Callable[[], tuple[int, int]] = field(repr=False)
    comparison: Comparison = "above"
    _snapshots: deque[tuple[float, int, int]] = field(default_factory=deque, repr=False, compare=False)

    def __post_init__(self) -> None:
        Rule.__post_init__(self)
        _check_number(self.name, "limit", self.limit, high=1.0)

    def check(self, window: Sequence[Observation], baseline: Sequence[Observation]) -> Check | None:
        now = time.monotonic()
        hits, total = self.read()
        self._snapshots.append((now, hits, total))
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= now - self.window_s:
            self._snapshots.popleft()
        _, hits0, total0 = self._snapshots[0]
        offered = total - total0
        if offered < self.min_samples:
            return None
        rate = (hits - hits0) / offered
        return Check(rate, self.limit, rate > self.limit, offered, self.what)


def budget_rule(cost_tracker: CostTracker, *, share_limit: float = 0.8, cooldown_s: float = 1800.0) -> GaugeRule:
    """Fires when the share of the hourly budget spent passes ``share_limit``."""

    def read() -> tuple[float, int] | None:
        budget = cost_tracker.budget_usd_per_hour
        if not budget:
            return None
        return cost_tracker.spent_last_hour() / budget, 1

    return GaugeRule(
        name="budget_spent_high",
        what="share of the hourly judge budget spent",
        limit=share_limit,
        read=read,
        min_samples=1,
        cooldown_s=cooldown_s,
        recommendation="heavy judge calls stop when the budget is spent: raise budget_usd_per_hour or sample less",
    )


def dropped_samples_rule(
    read: Callable[[], tuple[int, int]], *, limit: float = 0.05, **settings: Any
) -> CounterRateRule:
    """Fires when more than ``limit`` of completed RAG traces were dropped (full queue) in the window;
    ``settings`` override name, window, cooldown, recommendation."""
    settings.setdefault("name", "dropped_samples_high")
    settings.setdefault(
        "recommendation", "the evaluation queue overflows: raise max_queue_size or max_concurrency, or sample less"
    )
    return CounterRateRule(what="share of RAG traces dropped before evaluation", limit=limit, read=read, **settings)


def failed_sessions_rule(
    read: Callable[[], tuple[int, int]], *, limit: float = 0.3, **settings: Any
) -> CounterRateRule:
    """Fires when more than ``limit`` of the sessions closed in the window (default: the last hour, at least 10)
    had a failed turn; ``read`` returns (sessions with a failed turn, sessions closed), ``SessionScorer.totals``."""
    settings.setdefault("name", "failed_sessions_high")
    settings.setdefault("window_s", 3600.0)
    settings.setdefault("min_samples", 10)
    settings.setdefault(
        "recommendation", "conversations go wrong: open the sessions' worst turns in Phoenix (Sessions tab)"
    )
    return CounterRateRule(what="share of closed sessions with a failed turn", limit=limit, read=read, **settings)


#: Reads each audited tier's agreement now (``RAGEvaluator.audits.snapshot``).
AgreementReader = Callable[[], Mapping[str, Agreement]]


@dataclass(frozen=True, kw_only=True)
class AgreementRule(Rule):
    """A cheaper tier's agreement with its auditor (the audit samples) below ``threshold``.

    It fires only when the whole 95% Wilson interval is below the threshold, so a few unlucky audits never
    page; the value reported is the agreement of the tier whose interval is lowest.
    """

    threshold: float
    read: AgreementReader = field(repr=False)
    comparison: Comparison = "below"

    def __post_init__(self) -> None:
        Rule.__post_init__(self)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
            raise TypeError(f"{self.name}: threshold must be a number, got {self.threshold!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"{self.name}: threshold must be in (0, 1], got {self.threshold!r}")

    def check(self, window: Sequence[Observation], baseline: Sequence[Observation]) -> Check | None:
        measured = [a for a in self.read().values() if a.audits >= self.min_samples and a.agreement is not None]
        if not measured:
            return None
        worst = min(measured, key=lambda a: a.agreement_interval[1])
        low, high = worst.agreement_interval
        assert worst.agreement is not None
        detail = (
            f"{worst.tier} tier's agreement with its auditor over {worst.audits} audits "
            f"(95% interval {low:.0%}-{high:.0%})"
        )
        return Check(worst.agreement, self.threshold, high < self.threshold, worst.audits, detail)


def tier_agreement_rule(
    read: AgreementReader,
    *,
    threshold: float = 0.85,
    min_samples: int = 30,
    cooldown_s: float = 3600.0,
) -> AgreementRule:
    """Fires when a cheaper tier agrees with its auditor less than ``threshold`` of the time (the whole interval
    below it, over at least ``min_samples`` audits). ``read``: ``evaluator.audits.snapshot``."""
    return AgreementRule(
        name="tier_agreement_low",
        threshold=threshold,
        read=read,
        min_samples=min_samples,
        cooldown_s=cooldown_s,
        recommendation=(
            "a cheaper tier's verdicts no longer match the tier above: re-run ragtriage calibrate (against "
            "human labels: --from-phoenix), check the local judge model, and push the disagreements to a dataset "
            "(ragtriage dataset push --disagree auditor)"
        ),
    )
