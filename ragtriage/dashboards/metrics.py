"""OpenTelemetry metrics of every evaluation, through the app's MeterProvider.

Synchronous instruments are fed by an evaluator observer (on the evaluating
thread, a few dict operations per result); counters ragtriage already keeps
(cache, judge errors and retries, dropped samples) are read by observable
instruments at collection time, so nothing is counted twice.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from ragtriage._version import __version__
from ragtriage.evaluator.audit import AuditOutcome
from ragtriage.evaluator.evaluator import RAGEvaluator
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.intake.assembly import SKIP_COUNTERS
from ragtriage.sessions.scorer import SessionScore

Kind = Literal["counter", "histogram", "gauge"]


class HasStats(Protocol):
    """What counts the traces it drops or skips: the span processor, the collector."""

    @property
    def stats(self) -> Mapping[str, int]: ...


_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 5.0)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Processor counters that mean "a sample was not evaluated", as ``reason`` attribute values.
_DROP_REASONS = {
    "samples_dropped_queue_full": "queue_full",
    "traces_dropped_buffer_full": "buffer_full",
    "traces_expired": "trace_expired",
    "queue_dropped": "queue_unreachable",  # instrument(queue=...): Redis down
    "child_dropped": "evaluator_process_down",  # evaluate_in="process": the child could not be (re)started
    "child_lost": "evaluator_process_died",  # ... or died holding these samples
}
_NO_TIER = "none"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One emitted instrument: the single source for the SDK, the Prometheus names and the docs."""

    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...] = ()


SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "ragtriage.eval.evaluations",
        "counter",
        "{evaluation}",
        "Sampled evaluations by deciding tier, status and verdict.",
        ("tier", "status", "verdict"),
    ),
    MetricSpec(
        "ragtriage.eval.heavy_share",
        "gauge",
        "1",
        "Share of the recent decided evaluations that the heavy judge decided.",
    ),
    MetricSpec(
        "ragtriage.eval.score", "histogram", "1", "Scores of evaluated answers, one series per metric.", ("metric",)
    ),
    MetricSpec("ragtriage.eval.duration", "histogram", "s", "Wall time of a whole evaluation.", ("tier",)),
    MetricSpec(
        "ragtriage.eval.tier.duration", "histogram", "s", "Time spent in each cascade tier.", ("tier", "status")
    ),
    MetricSpec(
        "ragtriage.eval.cost", "counter", "USD", "Judge spend in US dollars, by the tier that spent it.", ("tier",)
    ),
    MetricSpec("ragtriage.eval.cache.lookups", "counter", "{lookup}", "Verdict cache lookups by result.", ("result",)),
    MetricSpec(
        "ragtriage.eval.samples.dropped",
        "counter",
        "{sample}",
        "Samples dropped before evaluation (a full queue never blocks the app).",
        ("reason",),
    ),
    MetricSpec(
        "ragtriage.eval.traces.skipped",
        "counter",
        "{trace}",
        "Traces not evaluated, by reason (not sampled, or no retrieval, question or answer found in them).",
        ("reason",),
    ),
    MetricSpec("ragtriage.eval.judge.errors", "counter", "{error}", "Judge calls that gave no verdict.", ("tier",)),
    MetricSpec("ragtriage.eval.judge.retries", "counter", "{retry}", "Retried judge HTTP calls.", ("tier",)),
    MetricSpec(
        "ragtriage.eval.judge.server.requests",
        "counter",
        "{request}",
        "Judge HTTP requests per server of a judge fleet, by outcome (ok, error).",
        ("tier", "server", "outcome"),
    ),
    MetricSpec(
        "ragtriage.eval.alerts", "counter", "{alert}", "Alerts fired, by rule and severity.", ("rule", "severity")
    ),
    MetricSpec(
        "ragtriage.eval.sessions",
        "counter",
        "{session}",
        "Sessions closed after going idle, by outcome (failed_turns: at least one turn failed; clean).",
        ("outcome",),
    ),
    MetricSpec(
        "ragtriage.eval.session.failed_share",
        "histogram",
        "1",
        "Share of a closed session's turns that failed.",
    ),
    MetricSpec(
        "ragtriage.eval.audits",
        "counter",
        "{audit}",
        "Audits of a cheaper tier's decision by the tier above, by outcome (agree, disagree, undecided, "
        "judge_error, budget_exhausted).",
        ("tier", "auditor", "outcome"),
    ),
    MetricSpec(
        "ragtriage.eval.tier_agreement",
        "gauge",
        "1",
        "A cheaper tier's agreement with its auditor over the audit window: the agreement rate and the precision "
        "of its fail verdicts (stat), each as the estimate and its 95% Wilson interval (bound: value, low, high).",
        ("tier", "stat", "bound"),
    ),
)
SPEC_BY_NAME: dict[str, MetricSpec] = {s.name: s for s in SPECS}

_registry_lock = threading.Lock()
_enabled: weakref.WeakKeyDictionary[RAGEvaluator, dict[int, EvalMetrics]] = weakref.WeakKeyDictionary()


class EvalMetrics:
    """The instruments of one evaluator on one MeterProvider; use :func:`enable_metrics` to build it.

    Without an evaluator (the app's side of ``evaluate_in="process"``/``"queue"``), only the processor's
    drop counts."""

    def __init__(
        self,
        evaluator: RAGEvaluator | None,
        *,
        processor: HasStats | None = None,
        meter_provider: MeterProvider | None = None,
        heavy_share_window: int = 200,
    ) -> None:
        if evaluator is not None and not isinstance(evaluator, RAGEvaluator):
            raise TypeError(f"evaluator must be a RAGEvaluator, got {type(evaluator).__name__}")
        if processor is not None and not isinstance(getattr(type(processor), "stats", None), property):
            raise TypeError(f"processor must have stats (an EvalSpanProcessor), got {type(processor).__name__}")
        if isinstance(heavy_share_window, bool) or not isinstance(heavy_share_window, int) or heavy_share_window < 1:
            raise ValueError(f"heavy_share_window must be a positive int, got {heavy_share_window!r}")
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        self.meter: Meter = provider.get_meter("ragtriage", __version__)
        # Weak: the MeterProvider keeps the callbacks (and so this object) alive, not the evaluator.
        self._evaluator: Callable[[], RAGEvaluator | None] = (
            weakref.ref(evaluator) if evaluator is not None else lambda: None
        )
        self._processor = weakref.ref(processor) if processor is not None else None
        self._lock = threading.Lock()
        self._recent: deque[bool] = deque(maxlen=heavy_share_window)
        self._enabled = True
        m = self.meter
        self._evaluations = m.create_counter(**_kw("ragtriage.eval.evaluations"))
        self._scores = m.create_histogram(
            **_kw("ragtriage.eval.score"), explicit_bucket_boundaries_advisory=list(_SCORE_BUCKETS)
        )
        self._duration = m.create_histogram(
            **_kw("ragtriage.eval.duration"), explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS)
        )
        self._tier_duration = m.create_histogram(
            **_kw("ragtriage.eval.tier.duration"), explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS)
        )
        self._cost = m.create_counter(**_kw("ragtriage.eval.cost"))
        self._alerts = m.create_counter(**_kw("ragtriage.eval.alerts"))
        self._sessions = m.create_counter(**_kw("ragtriage.eval.sessions"))
        self._session_failed_share = m.create_histogram(
            **_kw("ragtriage.eval.session.failed_share"), explicit_bucket_boundaries_advisory=list(_SCORE_BUCKETS)
        )
        self._audits = m.create_counter(**_kw("ragtriage.eval.audits"))
        m.create_observable_gauge(callbacks=[self._observe_heavy_share], **_kw("ragtriage.eval.heavy_share"))
        m.create_observable_gauge(callbacks=[self._observe_agreement], **_kw("ragtriage.eval.tier_agreement"))
        m.create_observable_counter(callbacks=[self._observe_cache], **_kw("ragtriage.eval.cache.lookups"))
        m.create_observable_counter(callbacks=[self._observe_dropped], **_kw("ragtriage.eval.samples.dropped"))
        m.create_observable_counter(callbacks=[self._observe_skipped], **_kw("ragtriage.eval.traces.skipped"))
        m.create_observable_counter(callbacks=[self._observe_judge_errors], **_kw("ragtriage.eval.judge.errors"))
        m.create_observable_counter(callbacks=[self._observe_retries], **_kw("ragtriage.eval.judge.retries"))
        m.create_observable_counter(callbacks=[self._observe_servers], **_kw("ragtriage.eval.judge.server.requests"))

    # -- recording ---------------------------------------------------------------------------------

    def observe(self, result: RAGEvaluationResult) -> None:
        """Record one sampled result (the evaluator observer): counters and histograms, no I/O."""
        if not self._enabled or not result.sampled:
            return
        tier = result.tier or _NO_TIER
        self._evaluations.add(1, {"tier": tier, "status": result.status, "verdict": result.verdict})
        self._duration.record(result.eval_latency_ms / 1000.0, {"tier": tier})
        for name, value in result.scores().items():  # a judge's: the free tiers' exist only on failures
            self._scores.record(value, {"metric": name})
        for step in result.tiers:
            self._tier_duration.record(step.latency_ms / 1000.0, {"tier": step.tier, "status": step.status})
            if step.cost_usd:
                self._cost.add(step.cost_usd, {"tier": step.tier})
        if result.tier is not None:
            with self._lock:
                self._recent.append(result.tier == "heavy")

    def observe_session(self, score: SessionScore) -> None:
        """Record one closed session (the session scorer's observer); the session judge's spend as tier
        ``session`` (its turns' spend was counted with each turn)."""
        if not self._enabled:
            return
        self._sessions.add(1, {"outcome": "failed_turns" if score.failed else "clean"})
        self._session_failed_share.record(score.failed_share)
        if score.resolution_cost_usd:
            self._cost.add(score.resolution_cost_usd, {"tier": "session"})

    def observe_audit(self, outcome: AuditOutcome) -> None:
        """Record one finished audit (the evaluator's audit observer): its outcome and its spend."""
        if not self._enabled:
            return
        agrees = outcome.agrees
        kind = (
            ("agree" if agrees else "disagree")
            if agrees is not None
            else ("undecided" if outcome.status == "ok" else outcome.status)
        )
        self._audits.add(1, {"tier": outcome.tier, "auditor": outcome.auditor, "outcome": kind})
        if outcome.cost_usd:
            self._cost.add(outcome.cost_usd, {"tier": "audit"})

    def record_alert(self, rule_name: str, severity: str) -> None:
        """Count one fired alert; the alert engine calls this when a rule fires (not on resolve)."""
        if not isinstance(rule_name, str) or not rule_name:
            raise ValueError(f"rule_name must be a non-empty string, got {rule_name!r}")
        if not isinstance(severity, str) or not severity:
            raise ValueError(f"severity must be a non-empty string, got {severity!r}")
        if self._enabled:
            self._alerts.add(1, {"rule": rule_name, "severity": severity})

    def disable(self) -> None:
        """Stop recording (the evaluator keeps the observer; it becomes a no-op)."""
        self._enabled = False

    @property
    def heavy_share(self) -> float | None:
        """Heavy-decided share of the last ``heavy_share_window`` decided evaluations."""
        with self._lock:
            return sum(self._recent) / len(self._recent) if self._recent else None

    # -- observable callbacks (run at collection, on the reader's thread) ---------------------------

    def _observe_heavy_share(self, options: CallbackOptions) -> Iterable[Observation]:
        share = self.heavy_share
        return [Observation(share)] if share is not None and self._enabled else []

    def _observe_agreement(self, options: CallbackOptions) -> Iterable[Observation]:
        evaluator = self._evaluator()
        if evaluator is None or not self._enabled:
            return []
        observations = []
        for tier, agreement in evaluator.audits.snapshot().items():
            for stat, value, (low, high) in (
                ("agreement", agreement.agreement, agreement.agreement_interval),
                ("fail_precision", agreement.fail_precision, agreement.fail_precision_interval),
            ):
                if value is None:
                    continue
                for bound, number in (("value", value), ("low", low), ("high", high)):
                    observations.append(Observation(number, {"tier": tier, "stat": stat, "bound": bound}))
        return observations

    def _observe_cache(self, options: CallbackOptions) -> Iterable[Observation]:
        counters = self._counters()
        return [Observation(counters.get(f"cache_{r}", 0), {"result": r}) for r in ("hit", "miss", "error")]

    def _observe_judge_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        counters = self._counters()
        return [Observation(counters.get(f"judge_error_{t}", 0), {"tier": t}) for t in ("local", "heavy")]

    def _observe_retries(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._retry_observations())

    def _retry_observations(self) -> Iterator[Observation]:
        evaluator = self._evaluator()
        if evaluator is None or not self._enabled:
            return
        for tier, judge in (("local", evaluator.local_judge), ("heavy", evaluator.heavy_judge)):
            retries = getattr(judge, "retries", None)
            if isinstance(retries, int):
                yield Observation(retries, {"tier": tier})

    def _observe_servers(self, options: CallbackOptions) -> Iterable[Observation]:
        evaluator = self._evaluator()
        if evaluator is None or not self._enabled:
            return []
        observations = []
        for tier, judge in (("local", evaluator.local_judge), ("heavy", evaluator.heavy_judge)):
            for server in getattr(judge, "servers", None) or ():
                attributes = {"tier": tier, "server": server.name}
                observations.append(Observation(server.calls - server.errors, {**attributes, "outcome": "ok"}))
                observations.append(Observation(server.errors, {**attributes, "outcome": "error"}))
        return observations

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._by_reason(_DROP_REASONS)

    def _observe_skipped(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._by_reason(SKIP_COUNTERS)

    def _by_reason(self, counters: Mapping[str, str]) -> list[Observation]:
        processor = self._processor() if self._processor is not None else None
        if processor is None or not self._enabled:
            return []
        stats = processor.stats
        return [Observation(stats.get(key, 0), {"reason": reason}) for key, reason in counters.items()]

    def _counters(self) -> dict[str, int]:
        evaluator = self._evaluator()
        return evaluator.counters if evaluator is not None and self._enabled else {}


def enable_metrics(
    evaluator: RAGEvaluator,
    *,
    processor: HasStats | None = None,
    meter_provider: MeterProvider | None = None,
) -> EvalMetrics:
    """Emit ``ragtriage.eval.*`` metrics for ``evaluator`` through ``meter_provider`` (default: the global one).

    Idempotent per (evaluator, provider): a second call returns the first ``EvalMetrics`` rather than
    counting every evaluation twice.
    """
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _registry_lock:
        per_provider = _enabled.setdefault(evaluator, {})
        existing = per_provider.get(id(provider))
        if existing is not None:
            return existing
        instance = EvalMetrics(evaluator, processor=processor, meter_provider=provider)
        evaluator.add_observer(instance.observe)
        evaluator.add_audit_observer(instance.observe_audit)
        per_provider[id(provider)] = instance
        return instance


def _kw(name: str) -> dict[str, str]:
    spec = SPEC_BY_NAME[name]
    return {"name": spec.name, "unit": spec.unit, "description": spec.description}
