"""RAGEvaluator: the adaptive judge cascade.

cache -> deterministic checks -> local judge -> heavy judge, cheapest first,
stopping at the first tier that can decide: the cascade is the ordered list of
tiers :meth:`RAGEvaluator._cascade` runs. Every result says which tier
decided, what each tier scored, and what it all cost.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import threading
import time
import warnings
import weakref
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from opentelemetry import context as otel_context

from ragtriage.checks.deterministic import DeterministicChecker, DeterministicReport
from ragtriage.evaluator.audit import AgreementWindow, AuditOutcome, audit_chosen, audited_tier
from ragtriage.evaluator.cache import Cache, MemoryCache, cache_key
from ragtriage.evaluator.conversation import Turn, check_history, recent_turns
from ragtriage.evaluator.cost import CostTracker
from ragtriage.evaluator.results import (
    JUDGE_TIERS,
    RAGEvaluationResult,
    RAGEvaluationThresholds,
    Status,
    Tier,
    TierOutcome,
    Verdict,
)
from ragtriage.evaluator.thresholds import alerts_for, near_threshold, verdict_for
from ragtriage.intake.sampling import is_sampled, sample_bound
from ragtriage.judges.base import Judge, JudgeError, JudgeVerdict
from ragtriage.metrics_registry import ALL, SCORES, VERDICT_METRICS

logger = logging.getLogger(__name__)

#: Local and heavy scores further apart than this trigger a second heavy run (self-consistency).
DISAGREEMENT = 0.2
#: Floor for the context-budget share in benefit_to_cost, so a tiny context does not divide by ~0.
_MIN_CONTEXT_SHARE = 0.05
_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY  # the key OTel and OpenInference instrumentors honour


@dataclass
class _Run:
    """Mutable scratchpad of one evaluation; frozen into a result at the end."""

    notes: list[str] = field(default_factory=list)
    tiers: list[TierOutcome] = field(default_factory=list)
    cost: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    raw: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    context_chars: int = 0
    certain: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)

    def spend(self, outcome: TierOutcome) -> None:
        self.tiers.append(outcome)
        self.cost += outcome.cost_usd
        self.prompt_tokens += outcome.prompt_tokens
        self.completion_tokens += outcome.completion_tokens


@dataclass
class _Case:
    """One evaluation as it climbs the cascade: its input, and what the tiers below found."""

    question: str
    answer: str
    contexts: list[str]
    base: dict[str, Any]  # the result fields every tier's result shares
    run: _Run
    started: float
    history: list[Turn] = field(default_factory=list)  # the turns before the question, bounded
    cache_key: str | None = None
    report: DeterministicReport | None = None
    local: JudgeVerdict | None = None


#: One tier: a result ends the cascade; ``None`` passes the case to the next tier up.
_Tier = Callable[[_Case], Awaitable["RAGEvaluationResult | None"]]
#: Called with each finished audit (the Phoenix writer puts it on the trace as ``audit_verdict``).
OnAudit = Callable[[AuditOutcome], Awaitable[None]]
#: Audits running at once, at most, per evaluator; more are dropped and counted (``audits_dropped_busy``).
MAX_AUDITS_IN_FLIGHT = 16
#: How long :meth:`RAGEvaluator.aclose` lets running audits finish before it cancels them.
_AUDIT_DRAIN_S = 10.0


class RAGEvaluator:
    r"""Scores RAG answers with a cost-aware cascade of judges: cache, deterministic checks, local judge,
    heavy judge only when the local one is unsure.

    Keyword-only; every argument is checked at once and a bad one raises ``ValueError``/``TypeError``
    naming it. With no LLM judge the free tiers run alone and undecided samples end ``uncertain``, never
    guessed; a judge that fails gives ``status="judge_error"``, never a default score.

    Args:
        local_judge: the cheap judge (a vLLM server through :class:`~ragtriage.LLMJudge`), asked first.
        heavy_judge: the expensive judge (OpenAI), asked only when the local one is unsure or failed.
        sample_rate: share of samples evaluated, decided by :meth:`should_sample` on the sample key.
        thresholds: the minimum of each metric (:class:`~ragtriage.RAGEvaluationThresholds`).
        confidence_threshold: below this local-judge confidence, the heavy judge decides.
        cache: a :class:`~ragtriage.Cache` (default: in-memory), or ``False`` for none.
        cost_tracker, budget_usd_per_hour: judge spend; heavy calls stop when the hourly budget is spent.
        max_context_chars: contexts are truncated to this many characters (with a note).
        max_history_turns, max_history_chars: how much of the conversation before a question every tier
            reads (its last turns; ``0`` turns: none): what the question refers to, never evidence.
        recent_results_size: how many results :attr:`recent_results` keeps (``history_size``: deprecated).
        citation_pattern: a regex of the app's citations (``r"\[(\d+)\]"``), checked against the contexts.
        escalation_margin: a score this close to its threshold escalates to the heavy judge.
        deterministic: your own :class:`~ragtriage.DeterministicChecker`.
        audit_rate: share of the cheaper tiers' decisions (a free-tier ``fail``, a confident local judge) judged
            again by the tier above (heavy, else local) in the background, to measure each tier's agreement
            (:attr:`audits`); verdicts never change. 0 here: a direct caller gets exactly the calls it asked
            for; :func:`ragtriage.instrument` and the workers take ``Config.audit_rate`` (0.05).
        audits: where the audits' agreement is kept (:attr:`audits`): this process's
            :class:`~ragtriage.evaluator.audit.AgreementWindow` by default; ``ragtriage worker`` passes a
            :class:`~ragtriage.evaluator.fleet_audits.RedisAgreementWindow` so the fleet reads one window.

    Alerts are not the evaluator's: attach an :class:`~ragtriage.alerts.AlertManager` as an observer
    (``evaluator.add_observer(manager.observe)``), as :func:`ragtriage.instrument` does.

    Example::

        evaluator = RAGEvaluator(
            local_judge=LLMJudge(model="meta-llama/Llama-3.1-8B-Instruct", base_url="http://vllm:8000/v1"),
            heavy_judge=LLMJudge(model="gpt-4o-mini"),
            sample_rate=1.0,
        )
        result = await evaluator.evaluate(question, answer, contexts)
        result.verdict, result.tier, result.faithfulness, result.eval_cost_usd
    """

    def __init__(
        self,
        *,
        local_judge: Judge | None = None,
        heavy_judge: Judge | None = None,
        sample_rate: float = 0.1,
        thresholds: RAGEvaluationThresholds | None = None,
        confidence_threshold: float = 0.7,
        cache: Cache | Literal[False] | None = None,
        cost_tracker: CostTracker | None = None,
        budget_usd_per_hour: float | None = None,
        max_context_chars: int = 12_000,
        recent_results_size: int = 1000,
        citation_pattern: str | None = None,
        escalation_margin: float = 0.05,
        deterministic: DeterministicChecker | None = None,
        max_history_turns: int = 6,
        max_history_chars: int = 4000,
        history_size: int | None = None,
        audit_rate: float = 0.0,
        audits: AgreementWindow | None = None,
    ) -> None:
        if history_size is not None:
            warnings.warn(
                "RAGEvaluator(history_size=) is now recent_results_size= ('history' is the conversation)",
                DeprecationWarning,
                stacklevel=2,
            )
            recent_results_size = history_size
        for name, judge in (("local_judge", local_judge), ("heavy_judge", heavy_judge)):
            if judge is not None and not isinstance(judge, Judge):
                raise TypeError(f"{name} must implement the Judge protocol (fingerprint, async judge()), got {judge!r}")
        _check_unit("sample_rate", sample_rate)
        _check_unit("confidence_threshold", confidence_threshold)
        _check_unit("escalation_margin", escalation_margin)
        _check_unit("audit_rate", audit_rate)
        if audits is not None and not isinstance(audits, AgreementWindow):
            raise TypeError(f"audits must be an AgreementWindow, got {type(audits).__name__}")
        if thresholds is None:
            thresholds = RAGEvaluationThresholds()
        elif not isinstance(thresholds, RAGEvaluationThresholds):
            raise TypeError(f"thresholds must be a RAGEvaluationThresholds, got {type(thresholds).__name__}")
        if cache is None:
            cache = MemoryCache()
        elif cache is not False and not isinstance(cache, Cache):
            raise TypeError(f"cache must implement the Cache protocol (async get/set) or be False, got {cache!r}")
        if cost_tracker is None:
            cost_tracker = CostTracker(budget_usd_per_hour=budget_usd_per_hour)
        elif not isinstance(cost_tracker, CostTracker):
            raise TypeError(f"cost_tracker must be a CostTracker, got {type(cost_tracker).__name__}")
        elif budget_usd_per_hour is not None:
            cost_tracker.budget_usd_per_hour = budget_usd_per_hour
        for name, value, low in (
            ("max_context_chars", max_context_chars, 100),
            ("recent_results_size", recent_results_size, 1),
            ("max_history_turns", max_history_turns, 0),
            ("max_history_chars", max_history_chars, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value!r}")
        if deterministic is not None and citation_pattern is not None:
            raise ValueError("pass citation_pattern to the DeterministicChecker given as deterministic, not both")
        if deterministic is None:
            deterministic = DeterministicChecker(citation_pattern=citation_pattern)
        elif not isinstance(deterministic, DeterministicChecker):
            raise TypeError(f"deterministic must be a DeterministicChecker, got {type(deterministic).__name__}")

        self.local_judge = local_judge
        self.heavy_judge = heavy_judge
        self.thresholds = thresholds
        self.confidence_threshold = float(confidence_threshold)
        self.escalation_margin = float(escalation_margin)
        self.cache: Cache | None = None if cache is False else cache
        self.cost_tracker = cost_tracker
        self.max_context_chars = max_context_chars
        self.max_history_turns = max_history_turns
        self.max_history_chars = max_history_chars
        self.deterministic = deterministic
        self._sample_rate = float(sample_rate)
        self._bound = sample_bound(self._sample_rate)
        self._recent: deque[RAGEvaluationResult] = deque(maxlen=recent_results_size)
        self._lock = threading.Lock()
        ref = weakref.ref(self)

        def fresh_lock() -> None:  # a fork while another thread held the lock must not deadlock the child
            if (evaluator := ref()) is not None:
                evaluator._lock = threading.Lock()
                evaluator._audit_tasks = set()  # the parent's loop and its tasks are not the child's

        os.register_at_fork(after_in_child=fresh_lock)
        self._counts: Counter[str] = Counter()
        self._observers: list[Callable[[RAGEvaluationResult], None]] = []
        self.audit_rate = float(audit_rate)
        #: Each audited tier's agreement with its auditor (read by metrics, the alert rule and reports).
        self.audits = audits if audits is not None else AgreementWindow()
        self._audit_observers: list[Callable[[AuditOutcome], None]] = []
        self._audit_tasks: set[asyncio.Task[None]] = set()
        #: The cascade, cheapest first; the last tier always decides.
        self._tiers: tuple[_Tier, ...] = (
            self._cache_tier,
            self._deterministic_tier,
            self._local_tier,
            self._heavy_tier,
        )
        self._fingerprint = "|".join(
            (
                deterministic.fingerprint,
                local_judge.fingerprint if local_judge else "-",
                heavy_judge.fingerprint if heavy_judge else "-",
                repr(thresholds),
                f"c{self.confidence_threshold}:m{self.escalation_margin}:x{max_context_chars}"
                f":h{max_history_turns}/{max_history_chars}",
            )
        )

    @classmethod
    def from_calibration(cls, path: str | os.PathLike[str], **kwargs: Any) -> RAGEvaluator:
        """An evaluator with the thresholds ``ragtriage calibrate`` recommended; ``kwargs`` win over the file."""
        from ragtriage.evaluator.calibration import load_calibration

        calibrated = load_calibration(os.fspath(path)).evaluator_kwargs(kwargs.get("thresholds"))
        return cls(**{**calibrated, **{k: v for k, v in kwargs.items() if k != "thresholds"}})

    # -- public surface ---------------------------------------------------------------------------

    @property
    def sample_rate(self) -> float:
        return self._sample_rate

    @property
    def last_result(self) -> RAGEvaluationResult | None:
        return self._recent[-1] if self._recent else None

    @property
    def recent_results(self) -> list[RAGEvaluationResult]:
        """The most recent sampled results, oldest first (at most ``recent_results_size``)."""
        return list(self._recent)

    @property
    def history(self) -> list[RAGEvaluationResult]:
        """Deprecated spelling of :attr:`recent_results` ("history" is a sample's conversation)."""
        warnings.warn("RAGEvaluator.history is now recent_results", DeprecationWarning, stacklevel=2)
        return self.recent_results

    @property
    def fingerprint(self) -> str:
        """Everything that changes a verdict; part of every cache key."""
        return self._fingerprint

    def add_observer(self, observer: Callable[[RAGEvaluationResult], None]) -> None:
        """Call ``observer`` with every sampled result (metrics, alert windows, reports).

        It runs on the thread that evaluated, right after the result is final: keep it quick and
        non-blocking. An exception in it is logged and counted, never raised into the evaluation.
        """
        if not callable(observer):
            raise TypeError(f"observer must be callable, got {observer!r}")
        self._observers.append(observer)

    def remove_observer(self, observer: Callable[[RAGEvaluationResult], None]) -> None:
        """Stop calling ``observer`` (e.g. one gate run's alerts, on an evaluator that outlives the run)."""
        self._observers.remove(observer)

    def add_audit_observer(self, observer: Callable[[AuditOutcome], None]) -> None:
        """Call ``observer`` with every finished audit (metrics); quick and non-blocking, like :meth:`add_observer`."""
        if not callable(observer):
            raise TypeError(f"observer must be callable, got {observer!r}")
        self._audit_observers.append(observer)

    @property
    def auditor(self) -> Literal["heavy", "local"] | None:
        """The tier that audits (heavy if configured, else local), or ``None``: nothing to audit with."""
        if self.audit_rate <= 0:
            return None
        return "heavy" if self.heavy_judge is not None else "local" if self.local_judge is not None else None

    async def drain_audits(self, timeout_s: float | None = None) -> None:
        """Wait for the audits running on this loop (a test, a flush, shutting down)."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._audit_tasks if t.get_loop() is loop]
        if mine:
            await asyncio.wait(mine, timeout=timeout_s)

    def should_sample(self, key: str | bytes | int) -> bool:
        """Deterministic on ``key``: an int (a trace id) uses its low 64 bits like ``TraceIdRatioBased``,
        text a BLAKE2b hash, so every process and host makes the same decision."""
        return is_sampled(key, self._bound)

    async def evaluate(
        self,
        question: str,
        answer: str,
        contexts: Sequence[str],
        *,
        history: Sequence[Mapping[str, str]] | None = None,
        sample_key: str | bytes | int | None = None,
        on_audit: OnAudit | None = None,
    ) -> RAGEvaluationResult:
        """Evaluate one sample; returns at once with ``sampled=False`` when the key is not sampled.

        ``history`` is the conversation before ``question`` (``{"role", "content"}`` turns, oldest first). Every
        tier reads its last turns (``max_history_turns``, ``max_history_chars``) to know what the question
        refers to, never as evidence for the answer; the verdict cache keys on them too.

        When the result is chosen for an audit (``audit_rate``), the audit runs afterwards as a task on this
        loop, and ``on_audit`` is awaited with its outcome there; the result returned never waits for it."""
        question = _check_text("question", question)
        answer = _check_text("answer", answer)
        contexts = _check_contexts(contexts)
        turns = [{"role": t["role"], "content": _clean(t["content"])} for t in check_history(history)]
        key = sample_key if sample_key is not None else question + "\x1f" + answer
        if not self.should_sample(key):
            self._count("not_sampled")
            return RAGEvaluationResult(sampled=False, sample_key=_key_text(sample_key), question=question)
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_KEY, True))
        try:
            result, case = await self._cascade(question, answer, contexts, turns, _key_text(sample_key))
            self._record(result)
            self._maybe_audit(case, result, key, on_audit)  # the task copies the suppressed context
        finally:
            otel_context.detach(token)
        return result

    def summary(self) -> dict[str, Any]:
        """Counts, mean scores and spend over the recent results, for a log line or a dashboard."""
        results = self.recent_results
        with self._lock:
            counts = dict(self._counts)
        decided = [r for r in results if r.tier is not None]
        by_tier = Counter(r.tier for r in decided)
        summary: dict[str, Any] = {
            "evaluations": len(results),
            "not_sampled": counts.get("not_sampled", 0),
            "by_tier": {t: by_tier.get(t, 0) for t in ("cache", "deterministic", "local", "heavy")},
            "by_verdict": dict(Counter(r.verdict for r in results)),
            "by_status": dict(Counter(r.status for r in results)),
            "heavy_share": (by_tier.get("heavy", 0) / len(decided)) if decided else None,
            "cost_usd": round(sum(r.eval_cost_usd for r in results), 6),
            "cost_by_tier_usd": {t: round(s.usd, 6) for t, s in self.cost_tracker.totals().items()},
            "mean_latency_ms": (sum(r.eval_latency_ms for r in results) / len(results)) if results else None,
            "cache_hits": counts.get("cache_hit", 0),
            "cache_misses": counts.get("cache_miss", 0),
            "audit_cost_usd": round(self.audits.cost_usd, 6),
            "audits": {t: a.to_dict() for t, a in self.audits.snapshot().items() if a.audits or a.undecided},
        }
        for metric in SCORES:  # a judge's scores only: the free tiers' exist only on failures
            values = [v for r in results if (v := r.scores((metric,)).get(metric)) is not None]
            summary[f"mean_{metric}"] = round(sum(values) / len(values), 4) if values else None
        return summary

    async def aclose(self) -> None:
        """Let this loop's audits finish (bounded), then close its judge and cache connections."""
        await self.drain_audits(_AUDIT_DRAIN_S)
        for task in [t for t in self._audit_tasks if t.get_loop() is asyncio.get_running_loop()]:
            task.cancel()
        for resource in (self.local_judge, self.heavy_judge, self.cache, self.audits):
            close = getattr(resource, "aclose", None)
            if close is not None:
                await close()

    def __repr__(self) -> str:
        return (
            f"RAGEvaluator(sample_rate={self._sample_rate}, local_judge={self.local_judge!r}, "
            f"heavy_judge={self.heavy_judge!r}, cache={self.cache!r})"
        )

    # -- the cascade --------------------------------------------------------------------------------

    async def _cascade(
        self, question: str, answer: str, contexts: list[str], history: list[Turn], sample_key: str | None
    ) -> tuple[RAGEvaluationResult, _Case]:
        started = time.perf_counter()
        run = _Run()
        contexts = self._truncate(contexts, run)
        run.context_chars = sum(len(c) for c in contexts)
        history, left_out = recent_turns(history, max_turns=self.max_history_turns, max_chars=self.max_history_chars)
        if left_out:
            run.notes.append(f"the judges read the last {len(history)} turns of the conversation, {left_out} left out")
        base: dict[str, Any] = {"sampled": True, "sample_key": sample_key, "question": question}
        case = _Case(question, answer, contexts, base, run, started, history)
        # Only LLM verdicts are cached (the free tiers are cheaper than a cache lookup), so without an LLM
        # judge the cache is not consulted at all.
        if self.cache is not None and (self.local_judge is not None or self.heavy_judge is not None):
            case.cache_key = cache_key(question, answer, contexts, self._fingerprint, history)
        for tier in self._tiers:
            if (result := await tier(case)) is not None:
                break
        else:  # pragma: no cover - the heavy tier always decides
            result = self._error(base, run, started, "judge_error")
        decided_now = result.status == "ok" and result.tier in JUDGE_TIERS and not result.error  # not a cache hit
        if case.cache_key is not None and decided_now:
            await self._cache_put(result, case.cache_key)
        return result, case

    # -- audits -----------------------------------------------------------------------------------------

    def _maybe_audit(
        self, case: _Case, result: RAGEvaluationResult, key: str | bytes | int, on_audit: OnAudit | None
    ) -> None:
        if self.audit_rate <= 0:
            return
        auditor = audited_tier(result, has_local=self.local_judge is not None, has_heavy=self.heavy_judge is not None)
        if auditor is None or not audit_chosen(_key_text(key) or "", self.audit_rate):
            return
        if len(self._audit_tasks) >= MAX_AUDITS_IN_FLIGHT:
            self.audits.count("audits_dropped_busy")
            return
        task = asyncio.get_running_loop().create_task(self._audit(case, result, auditor, on_audit))
        self._audit_tasks.add(task)
        task.add_done_callback(self._audit_tasks.discard)

    async def _audit(
        self, case: _Case, result: RAGEvaluationResult, auditor: Literal["local", "heavy"], on_audit: OnAudit | None
    ) -> None:
        assert result.tier is not None  # audited_tier() chose a decided result
        outcome = AuditOutcome(result.sample_key, result.tier, result.verdict, auditor, None)
        judge = self.heavy_judge if auditor == "heavy" else self.local_judge
        assert judge is not None
        if not self.cost_tracker.admits_audit():
            outcome = replace(outcome, status="budget_exhausted", detail="audits stop first when the budget runs low")
        else:
            try:
                # the auditor reads the conversation the audited tier read, or it would judge another question
                extra: dict[str, Any] = {"history": case.history} if case.history and _accepts(judge, "history") else {}
                verdict = await judge.judge(
                    case.question, case.answer, case.contexts, verify_claims=auditor == "heavy", **extra
                )
            except JudgeError as exc:
                usage = exc.usage
                outcome = replace(
                    outcome, status="judge_error", cost_usd=usage.cost_usd, latency_ms=usage.latency_ms,
                    detail=exc.reason,
                )  # fmt: skip
            except Exception as exc:  # a third-party Judge broke its contract: still never a verdict
                logger.exception("ragtriage: the %s judge raised instead of JudgeError in an audit", auditor)
                outcome = replace(outcome, status="judge_error", detail=f"{type(exc).__name__}: {exc}")
            else:
                usage = verdict.usage
                outcome = replace(
                    outcome,
                    audit_verdict=verdict_for(_metrics(verdict), self.thresholds),
                    cost_usd=usage.cost_usd,
                    latency_ms=usage.latency_ms,
                    faithfulness=verdict.faithfulness,
                    detail=verdict.output.reasons.strip(),
                )
            self.cost_tracker.record("audit", usd=outcome.cost_usd)
        await self.audits.record(outcome)  # and to the fleet's window where it is shared; never raises
        for observer in self._audit_observers:
            try:
                observer(outcome)
            except Exception:
                self._count("observer_error")
                logger.exception("ragtriage: audit observer %r failed", observer)
        if on_audit is not None:
            try:
                await on_audit(outcome)
            except Exception as exc:
                self.audits.count("audits_write_failed")
                logger.debug("ragtriage: writing an audit failed: %r", exc)

    async def _cache_tier(self, case: _Case) -> RAGEvaluationResult | None:
        if case.cache_key is None:
            return None
        cached = await self._cache_get(case.cache_key)
        if cached is None:
            return None
        return replace(
            cached,
            **case.base,
            tier="cache",
            tier_scores={**cached.tier_scores, "cache": cached.faithfulness},
            eval_cost_usd=0.0,
            prompt_tokens=0,
            completion_tokens=0,
            eval_latency_ms=_ms(case.started),
            notes=[*case.run.notes, f"verdict cached from the {cached.tier} tier", *cached.notes],
            tiers=[TierOutcome("cache", cached.faithfulness, latency_ms=_ms(case.started))],
        )

    async def _deterministic_tier(self, case: _Case) -> RAGEvaluationResult | None:
        base, run, started = case.base, case.run, case.started
        t0 = time.perf_counter()
        report = case.report = self.deterministic.check(case.question, case.answer, case.contexts, case.history)
        grounding = report.grounding.score
        run.spend(TierOutcome("deterministic", grounding, latency_ms=_ms(t0), detail="; ".join(report.failures)))
        run.certain, run.signals = list(report.failures), list(report.signals)
        run.notes.extend(str(f) for f in sorted(report.findings, key=lambda f: not f.certain))
        if report.decided_fail:
            metrics: dict[str, float | None] = {}
            if report.empty_answer or report.refusal:
                metrics["answer_quality"] = 0.0
            if report.unfaithful:  # it states what no context does: certainly not faithful to them
                metrics["faithfulness"] = 0.0
            return self._result(base, run, started, tier="deterministic", metrics=metrics, verdict="fail")
        if self.local_judge is None and self.heavy_judge is None:
            run.notes.append("no LLM judge configured: the free tiers could not decide")
            return self._result(base, run, started, tier="deterministic", metrics={}, verdict="uncertain")
        return None

    async def _local_tier(self, case: _Case) -> RAGEvaluationResult | None:
        if self.local_judge is None:
            return None
        local = case.local = await self._call("local", self.local_judge, case)
        if local is None:
            return None
        assert case.report is not None  # the deterministic tier ran first
        escalate = self._why_escalate(local, case.report)
        if escalate is None:
            return self._from_verdicts(case.base, case.run, case.started, "local", [local], case.contexts)
        case.run.notes.append(f"escalated: {escalate}")
        return None

    async def _heavy_tier(self, case: _Case) -> RAGEvaluationResult:
        base, run, started, local, contexts = case.base, case.run, case.started, case.local, case.contexts
        if self.heavy_judge is None:
            if local is None:
                return self._error(base, run, started, "judge_error")
            run.notes.append("no heavy judge configured: the local judge's scores stand, verdict left uncertain")
            return self._from_verdicts(base, run, started, "local", [local], contexts, force_uncertain=True)

        heavy_runs: list[JudgeVerdict] = []
        for attempt in range(2):
            if self.cost_tracker.exhausted():
                run.spend(TierOutcome("heavy", None, status="skipped", detail="hourly budget exhausted"))
                run.notes.append("heavy judge skipped: the hourly budget is spent")
                break
            verdict = await self._call(
                "heavy", self.heavy_judge, case, verify_claims=True, temperature=None if attempt == 0 else 0.7
            )
            if verdict is None:
                break
            heavy_runs.append(verdict)
            if attempt == 0:
                gap = _max_gap(local, verdict)
                if gap is None or gap <= DISAGREEMENT:
                    break
                run.notes.append(f"local and heavy judges disagree by {gap:.2f}: heavy judge runs again")

        budget_stopped = any(t.status == "skipped" for t in run.tiers)
        if heavy_runs:
            return self._from_verdicts(
                base, run, started, "heavy", heavy_runs, contexts, status="budget_exhausted" if budget_stopped else "ok"
            )
        if local is not None:
            run.notes.append("the heavy judge gave no verdict: the local judge's verdict stands")
            return self._from_verdicts(
                base, run, started, "local", [local], contexts, status="budget_exhausted" if budget_stopped else "ok"
            )
        return self._error(base, run, started, "budget_exhausted" if budget_stopped else "judge_error")

    def _why_escalate(self, local: JudgeVerdict, report: DeterministicReport) -> str | None:
        output = local.output
        if output.confidence < self.confidence_threshold:
            return f"local judge confidence {output.confidence:.2f} < {self.confidence_threshold:.2f}"
        metrics = _metrics(local)
        near = near_threshold(metrics, self.thresholds, self.escalation_margin)
        if near is not None:
            return f"local {near}"
        if report.injection:
            return "a context contains instruction-like text; the local verdict is not trusted alone"
        grounding = report.grounding
        if (grounding.unsupported_numbers or grounding.unsupported_entities) and (
            local.faithfulness >= self.thresholds.faithfulness
        ):
            return "local judge passes an answer with terms found in no context"
        return None

    async def _call(
        self,
        tier: Literal["local", "heavy"],
        judge: Judge,
        case: _Case,
        *,
        verify_claims: bool = False,
        temperature: float | None = None,
    ) -> JudgeVerdict | None:
        run = case.run
        # each only when there is some and the judge takes it: a plug-in written before may not
        extra: dict[str, Any] = {
            name: value
            for name, value in (("checks", run.signals), ("history", case.history))
            if value and _accepts(judge, name)
        }
        try:
            verdict = await judge.judge(
                case.question, case.answer, case.contexts, verify_claims=verify_claims, temperature=temperature, **extra
            )
        except JudgeError as exc:
            usage = exc.usage
            self.cost_tracker.record(
                tier, usd=usage.cost_usd, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
            )
            run.spend(
                TierOutcome(
                    tier,
                    None,
                    "error",
                    usage.cost_usd,
                    usage.latency_ms,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    exc.reason,
                )
            )
            run.errors.append(f"{tier} judge: {exc.reason}")
            if exc.raw:
                run.raw.append(exc.raw)
            self._count(f"judge_error_{tier}")
            return None
        except Exception as exc:  # a third-party Judge broke its contract: still never a score
            logger.exception("ragtriage: %s judge raised instead of JudgeError", tier)
            run.spend(TierOutcome(tier, None, "error", detail=f"{type(exc).__name__}: {exc}"))
            run.errors.append(f"{tier} judge: unexpected {type(exc).__name__}: {exc}")
            self._count(f"judge_error_{tier}")
            return None
        usage = verdict.usage
        self.cost_tracker.record(
            tier, usd=usage.cost_usd, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
        )
        run.spend(
            TierOutcome(
                tier,
                verdict.faithfulness,
                "ok",
                usage.cost_usd,
                usage.latency_ms,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
        )
        run.raw.append(verdict.raw)
        return verdict

    # -- building results -----------------------------------------------------------------------------

    def _from_verdicts(
        self,
        base: dict[str, Any],
        run: _Run,
        started: float,
        tier: Tier,
        verdicts: list[JudgeVerdict],
        contexts: list[str],
        *,
        status: Status = "ok",
        force_uncertain: bool = False,
    ) -> RAGEvaluationResult:
        metrics = _mean_metrics([_metrics(v) for v in verdicts])
        recall, precision = metrics["context_recall"], metrics["context_precision"]
        if recall is not None and precision is not None:
            benefit = 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)
            share = max(run.context_chars / self.max_context_chars, _MIN_CONTEXT_SHARE)
            metrics["retrieval_benefit"] = round(benefit, 4)
            metrics["benefit_to_cost"] = round(benefit / share, 4)
        doc_relevance: list[float | None] = []
        for i in range(1, len(contexts) + 1):
            values = [d.relevance for v in verdicts for d in v.output.documents if d.index == i]
            doc_relevance.append(round(sum(values) / len(values), 4) if values else None)
        verdict = "uncertain" if force_uncertain else verdict_for(metrics, self.thresholds)
        reasons = verdicts[-1].output.reasons.strip()
        if reasons:
            run.notes.append(f"{tier} judge: {reasons}")
        return self._result(
            base,
            run,
            started,
            tier=tier,
            metrics=metrics,
            verdict=verdict,
            status=status,
            document_relevance=doc_relevance,
        )

    def _error(self, base: dict[str, Any], run: _Run, started: float, status: Status) -> RAGEvaluationResult:
        return self._result(base, run, started, tier=None, metrics={}, verdict="uncertain", status=status)

    def _result(
        self,
        base: dict[str, Any],
        run: _Run,
        started: float,
        *,
        tier: Tier | None,
        metrics: dict[str, float | None],
        verdict: Verdict,
        status: Status = "ok",
        document_relevance: list[float | None] | None = None,
    ) -> RAGEvaluationResult:
        alerts, suggestions = alerts_for(metrics, self.thresholds)
        scores: dict[str, Any] = {name: metrics.get(name) for name in ALL}  # every metric, by its one spelling
        return RAGEvaluationResult(
            **base,
            **scores,
            verdict=verdict,
            tier=tier,
            tier_scores={t.tier: t.score for t in run.tiers if t.status == "ok"},
            status=status,
            error="; ".join(run.errors) or None,
            eval_cost_usd=round(run.cost, 8),
            eval_latency_ms=_ms(started),
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            alerts=alerts,
            suggestions=suggestions,
            notes=run.notes,
            certain_evidence=run.certain,
            signals=run.signals,
            raw_response="\n---\n".join(run.raw) or None,
            document_relevance=document_relevance or [],
            tiers=run.tiers,
        )

    def _truncate(self, contexts: list[str], run: _Run) -> list[str]:
        total = sum(len(c) for c in contexts)
        if total <= self.max_context_chars:
            return contexts
        kept: list[str] = []
        room = self.max_context_chars
        for context in contexts:
            if room <= 0:
                break
            kept.append(context[:room])
            room -= len(kept[-1])
        run.notes.append(
            f"contexts truncated to max_context_chars={self.max_context_chars} of {total} characters"
            + (
                f"; {len(contexts) - len(kept)} of {len(contexts)} contexts dropped"
                if len(kept) < len(contexts)
                else ""
            )
        )
        self._count("contexts_truncated")
        return kept

    # -- cache, bookkeeping ------------------------------------------------------------------------------

    async def _cache_get(self, key: str) -> RAGEvaluationResult | None:
        assert self.cache is not None
        try:
            payload = await self.cache.get(key)
            result = RAGEvaluationResult.from_dict(json.loads(payload)) if payload else None
        except Exception as exc:  # a broken cache is a miss, never a failed evaluation
            self._count("cache_error")
            logger.debug("ragtriage: cache read failed: %r", exc)
            result = None
        self._count("cache_hit" if result is not None else "cache_miss")
        return result

    async def _cache_put(self, result: RAGEvaluationResult, key: str) -> None:
        assert self.cache is not None
        try:
            await self.cache.set(key, json.dumps(result.to_dict(), ensure_ascii=False, separators=(",", ":")))
        except Exception as exc:
            self._count("cache_error")
            logger.debug("ragtriage: cache write failed: %r", exc)

    def _record(self, result: RAGEvaluationResult) -> None:
        with self._lock:
            self._recent.append(result)
            self._counts[f"tier_{result.tier}"] += 1
            self._counts[f"status_{result.status}"] += 1
        for observer in self._observers:
            try:
                observer(result)
            except Exception:
                self._count("observer_error")
                logger.exception("ragtriage: result observer %r failed", observer)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    @property
    def counters(self) -> dict[str, int]:
        """Operational counters (cache hits, judge errors, truncations, ...)."""
        with self._lock:
            return dict(self._counts)


def _metrics(verdict: JudgeVerdict) -> dict[str, float | None]:
    out = verdict.output
    return {
        "faithfulness": verdict.faithfulness,
        "relevance": out.relevance,
        "answer_quality": out.answer_quality,
        "context_recall": out.context_recall,
        "context_precision": out.context_precision,
    }


def _mean_metrics(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    merged: dict[str, float | None] = {}
    for name in runs[0]:
        values = [v for r in runs if (v := r[name]) is not None]
        merged[name] = round(sum(values) / len(values), 4) if values else None
    return merged


def _max_gap(local: JudgeVerdict | None, heavy: JudgeVerdict) -> float | None:
    if local is None:
        return None
    a, b = _metrics(local), _metrics(heavy)
    gaps = [abs(x - y) for m in VERDICT_METRICS if (x := a[m]) is not None and (y := b[m]) is not None]
    return max(gaps) if gaps else None


def _accepts(judge: Judge, parameter: str) -> bool:
    """Whether ``judge.judge`` takes ``parameter``: a plug-in written before it existed may not."""
    try:
        parameters = inspect.signature(judge.judge).parameters
    except (TypeError, ValueError):
        return False
    return parameter in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _key_text(key: str | bytes | int | None) -> str | None:
    if key is None or isinstance(key, str):
        return key
    if isinstance(key, int):
        return f"{key:032x}"
    return key.hex()


def _check_unit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    return _clean(value)


def _check_contexts(contexts: object) -> list[str]:
    if isinstance(contexts, str | bytes) or not isinstance(contexts, Sequence):
        raise TypeError(f"contexts must be a sequence of str, got {type(contexts).__name__}")
    checked = []
    for i, context in enumerate(contexts):
        if not isinstance(context, str):
            raise TypeError(f"contexts[{i}] must be str, got {type(context).__name__}")
        checked.append(_clean(context))
    return checked


def _clean(text: str) -> str:
    """Lone surrogates (from broken decoding upstream) cannot be sent as JSON: replace them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
