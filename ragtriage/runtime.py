"""One builder, from a :class:`~ragtriage.config.Config` and a role, for every entry point.

The roles, and what each one gets:

========================  ==============================================================================
``app``                   ``instrument()``: the span processor, and behind it ``evaluate_in="thread"``: the
                          whole pipeline, here. ``"process"``: a handler that sends samples to the evaluator
                          process. ``"queue"``: a handler that publishes them to the Redis Stream. Nothing
                          else is built in the app then.
``collector``             ``ragtriage collect``: as ``app``, for traces received over OTLP.
``evaluator_process``     the child of ``evaluate_in="process"``: the pipeline, with the app's drop counts.
``worker``                ``ragtriage worker``: the pipeline, alert and audit windows shared by the fleet in Redis.
``offline``               ``ragtriage ci``/``calibrate``, the pytest plugin: the pipeline without write-back;
                          alerts are recorded for the report and sent only with ``send_alerts=True``.
========================  ==============================================================================

Everywhere alerts exist, the same rules apply: ``alert_rules``, else the rules file, else the built-in
rules (plus the budget rule with a budget); the dropped-samples rule wherever samples can be dropped.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from opentelemetry.metrics import MeterProvider

from ragtriage.alerts import (
    AlertManager,
    AlertSink,
    RecordingAlertSink,
    RedisAlertState,
    Rule,
    budget_rule,
    default_rules,
    dropped_samples_rule,
    failed_sessions_rule,
    load_rules,
    sinks_from_config,
    tier_agreement_rule,
)
from ragtriage.alerts.rules import AgreementReader
from ragtriage.config import Config
from ragtriage.dashboards.metrics import EvalMetrics, HasStats, enable_metrics
from ragtriage.dashboards.prometheus import MetricsServer, serve_metrics
from ragtriage.evaluator.audit import AgreementWindow
from ragtriage.evaluator.cache import RedisCache
from ragtriage.evaluator.calibration import load_calibration
from ragtriage.evaluator.cost import CostTracker
from ragtriage.evaluator.evaluator import RAGEvaluator
from ragtriage.evaluator.fleet_audits import RedisAgreementWindow
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.export.phoenix import PhoenixWriter, base_url, parse_headers
from ragtriage.handoff.child_process import ProcessHandler
from ragtriage.handoff.redis_stream import StreamPublisher
from ragtriage.judges.llm import LLMJudge
from ragtriage.judges.session import SessionJudge
from ragtriage.pipeline import Pipeline, ResultWriter, SampleHandler
from ragtriage.sample import RAGSample
from ragtriage.sessions import MemorySessionStore, RedisSessionStore, SessionScorer
from ragtriage.span_processor.processor import EvalSpanProcessor

logger = logging.getLogger(__name__)

Role = Literal["app", "collector", "evaluator_process", "worker", "offline"]
ROLES: tuple[Role, ...] = ("app", "collector", "evaluator_process", "worker", "offline")
#: Roles that see traces (and so sample, and may drop): where evaluation happens is theirs to choose.
_FRONT = ("app", "collector")


class DropCounter:
    """``(dropped, offered)`` RAG traces, read by the dropped-samples alert.

    In the app it reads the span processor's stats (:meth:`bind`, once the processor exists); in the
    evaluator process it holds the totals the app sends over the pipe (``totals``)."""

    def __init__(self) -> None:
        self.processor: HasStats | None = None
        self.totals = (0, 0)

    def bind(self, processor: HasStats) -> None:
        self.processor = processor

    def __call__(self) -> tuple[int, int]:
        return self.totals if self.processor is None else drop_totals(self.processor.stats)


def drop_totals(stats: Mapping[str, int]) -> tuple[int, int]:
    """Traces dropped before evaluation (queue full; with an evaluator process also while none was running,
    or lost when it died) and traces offered, from :attr:`EvalSpanProcessor.stats`."""
    full = stats.get("samples_dropped_queue_full", 0)
    dropped = full + stats.get("child_dropped", 0) + stats.get("child_lost", 0)
    return dropped, full + stats.get("samples_queued", 0)


@dataclass
class Runtime:
    """What one entry point runs: the handler for its samples, and the alerts and metrics around it."""

    config: Config
    role: Role
    project: str
    handler: SampleHandler
    pipeline: Pipeline | None = None
    alerts: AlertManager | None = None
    recorded: RecordingAlertSink | None = None
    drops: DropCounter = field(default_factory=DropCounter)
    metrics: EvalMetrics | None = None
    metrics_server: MetricsServer | None = None
    #: Role ``app``: the span processor to add to the app's TracerProvider.
    processor: EvalSpanProcessor | None = None

    @property
    def evaluator(self) -> RAGEvaluator | None:
        return self.pipeline.evaluator if self.pipeline is not None else None

    def start_metrics(
        self,
        *,
        processor: HasStats | None = None,
        meter_provider: MeterProvider | None = None,
        port: int | None = None,
    ) -> EvalMetrics:
        """Emit ``ragtriage.eval.*`` metrics (served for Prometheus on ``metrics_host:port``, if given)."""
        if processor is not None:
            self.drops.bind(processor)
        if port is not None:
            self.metrics_server = serve_metrics(port, addr=self.config.metrics_host)
            meter_provider = self.metrics_server.meter_provider
        evaluator = self.evaluator
        if evaluator is not None:
            self.metrics = enable_metrics(evaluator, processor=processor, meter_provider=meter_provider)
        else:  # evaluation happens elsewhere: only this process's drop counts
            self.metrics = EvalMetrics(None, processor=processor, meter_provider=meter_provider)
        metrics = self.metrics
        if self.alerts is not None:
            self.alerts.add_listener(lambda event: metrics.record_alert(event.rule, event.severity))
        if self.pipeline is not None and self.pipeline.sessions is not None:
            self.pipeline.sessions.add_observer(metrics.observe_session)
        return metrics

    async def aclose(self) -> None:
        """Score the sessions still open in memory (within ``exit_flush_timeout_s``), finish the alerts (an
        offline run judges its final window first), close connections."""
        unwritten = await self.handler.finish(self.config.exit_flush_timeout_s)
        if unwritten:
            logger.warning(
                "ragtriage: at exit, %d open session(s) were not written after waiting %.1f s; raise "
                "exit_flush_timeout_s (RAGTRIAGE_EXIT_FLUSH_TIMEOUT_S) to wait longer",
                unwritten,
                self.config.exit_flush_timeout_s,
            )
        if self.alerts is not None:
            if self.role == "offline":
                await self.alerts.tick()
            await self.alerts.aclose()
        await self.handler.aclose()

    def stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.disable()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()


def build(
    config: Config,
    role: Role,
    *,
    project: str | None = None,
    evaluator: RAGEvaluator | None = None,
    writer: ResultWriter | None = None,
    on_result: Callable[[RAGSample, RAGEvaluationResult], None] | None = None,
    alert_sinks: Sequence[AlertSink] | None = None,
    alert_rules: Sequence[Rule] | None = None,
    send_alerts: bool = False,
    metrics_port: int | None = None,
) -> Runtime:
    """The runtime ``role`` runs, as ``config`` describes it.

    ``evaluator``, ``writer``, ``on_result``, ``alert_sinks`` and ``alert_rules`` are in-process objects
    that replace what the configuration would build (``instrument()`` passes them through).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    project = project or config.project_name
    drops = DropCounter()
    if role in _FRONT and config.evaluate_in == "queue":
        assert config.queue_url is not None  # Config guarantees it
        publisher = StreamPublisher(config.queue_url)
        return _with_processor(Runtime(config, role, project, publisher, drops=drops), evaluator)
    if role in _FRONT and config.evaluate_in == "process":
        handler = _evaluator_process(config, project, metrics_port, drops)
        return _with_processor(Runtime(config, role, project, handler, drops=drops), evaluator)

    fleet_redis = config.queue_url if role == "worker" else None
    if evaluator is None:
        # Elsewhere than in the app, the sampling was done where the trace was seen.
        evaluator = build_evaluator(
            config,
            sample_rate=config.sample_rate if role in _FRONT else 1.0,
            audit_rate=0.0 if role == "offline" else None,  # an offline run judges every item with every tier
            # a fleet of workers measures one agreement window, kept in Redis next to the queue
            audits=RedisAgreementWindow(fleet_redis, project=project) if fleet_redis else None,
        )
    if role == "offline" or (writer is None and not config.write_back):
        writer = None
    elif writer is None:
        writer = PhoenixWriter(
            endpoint=config.endpoint,
            project_name=project,
            api_key=config.phoenix_api_key,
            headers=parse_headers(config.phoenix_client_headers),
        )
    sessions = None if role == "offline" else _session_scorer(config, role, project, evaluator, writer)
    pipeline = Pipeline(evaluator, writer=writer, on_result=on_result, sessions=sessions)
    runtime = Runtime(config, role, project, pipeline, pipeline=pipeline, drops=drops)

    recorded = RecordingAlertSink() if role == "offline" else None
    if alert_sinks is None:
        alert_sinks = sinks_from_config(config) if role != "offline" or send_alerts else []
    if recorded is not None:
        alert_sinks = [*alert_sinks, recorded]
    # what the always-on rules read, where it exists: samples can be dropped, sessions are scored, a tier audits
    sources = _Sources(
        drops=drops if role in (*_FRONT, "evaluator_process") else None,
        session_totals=sessions.totals if sessions is not None else None,
        agreement=evaluator.audits.snapshot if evaluator.auditor is not None else None,
    )
    if alert_rules is None:
        alert_rules = _rules(config, evaluator, sources)
    alerts = AlertManager(
        alert_rules,
        alert_sinks,
        project=project,
        phoenix_url=base_url(config.endpoint),
        # to the traces each alert is about, once the writer knows the project's id in Phoenix
        phoenix_link=writer.links.for_alert if isinstance(writer, PhoenixWriter) else None,
        # a fleet of workers judges one window, kept in Redis next to the queue
        state=RedisAlertState(fleet_redis, project=project) if fleet_redis else None,
        evaluate_every_s=0.0 if role == "offline" else 1.0,
    )
    _add_watchdogs(alerts, sources)
    evaluator.add_observer(alerts.observe)
    runtime.alerts, runtime.recorded = alerts, recorded
    return _with_processor(runtime, evaluator)


def _with_processor(runtime: Runtime, evaluator: RAGEvaluator | None) -> Runtime:
    """Role ``app``: the span processor that feeds the runtime's handler (``instrument()`` adds it)."""
    if runtime.role != "app":
        return runtime
    config = runtime.config
    runtime.processor = EvalSpanProcessor(
        runtime.handler,
        sample_rate=evaluator.sample_rate if evaluator is not None else config.sample_rate,
        max_queue_size=config.max_queue_size,
        max_traces_in_flight=config.max_traces_in_flight,
        max_spans_per_trace=config.max_spans_per_trace,
        trace_ttl_s=config.trace_ttl_s,
        # a child evaluates max_concurrency at once; the parent only waits for its replies
        max_concurrency=config.max_queue_size if config.evaluate_in == "process" else config.max_concurrency,
        explain_traces=config.explain_traces or 0,
        exit_flush_timeout_s=config.exit_flush_timeout_s,
    )
    runtime.drops.bind(runtime.processor)
    return runtime


def build_evaluator(
    config: Config,
    *,
    sample_rate: float | None = None,
    audit_rate: float | None = None,
    audits: AgreementWindow | None = None,
) -> RAGEvaluator:
    """The evaluator the configuration describes (judges, cache, budget, calibration file, audits); with no judge
    URL or key, the free tiers alone."""
    local = (
        LLMJudge(model=config.local_judge_model, base_url=config.local_judge_url) if config.local_judge_url else None
    )
    heavy = None
    if config.openai_api_key or config.heavy_judge_url:
        heavy = LLMJudge(
            model=config.heavy_judge_model,
            base_url=config.heavy_judge_url,
            api_key=config.openai_api_key,
            input_usd_per_1m=config.heavy_input_usd_per_1m,
            output_usd_per_1m=config.heavy_output_usd_per_1m,
        )
    calibrated: dict[str, Any] = {"confidence_threshold": config.confidence_threshold}
    if config.calibration_file:
        calibrated.update(load_calibration(config.calibration_file).evaluator_kwargs())
    return RAGEvaluator(
        **calibrated,
        local_judge=local,
        heavy_judge=heavy,
        sample_rate=config.sample_rate if sample_rate is None else sample_rate,
        cost_tracker=CostTracker(budget_usd_per_hour=config.budget_usd_per_hour),
        cache=RedisCache(config.redis_url) if config.redis_url else None,
        max_history_turns=config.max_history_turns,
        max_history_chars=config.max_history_chars,
        audit_rate=config.audit_rate if audit_rate is None else audit_rate,
        audits=audits,
    )


def _session_scorer(
    config: Config, role: Role, project: str, evaluator: RAGEvaluator, writer: ResultWriter | None
) -> SessionScorer | None:
    """Session scores where the pipeline runs (``session_idle_s`` 0: none). Workers share open sessions in the
    queue's Redis, so a conversation whose turns went to several workers is one session, closed by one."""
    if not config.session_idle_s:
        return None
    queue = config.queue_url if role == "worker" else None
    store = RedisSessionStore(queue, project=project) if queue else MemorySessionStore()
    judge = None
    if config.session_judge:
        model = next((j for j in (evaluator.heavy_judge, evaluator.local_judge) if isinstance(j, LLMJudge)), None)
        if model is None:
            logger.warning(
                "ragtriage: session_judge (RAGTRIAGE_SESSION_JUDGE) needs an LLM judge; sessions are scored without it"
            )
        else:
            judge = SessionJudge(model)
    return SessionScorer(
        store=store,
        idle_s=config.session_idle_s,
        judge=judge,
        writer=writer if callable(getattr(writer, "write_session", None)) else None,  # type: ignore[arg-type]
        cost_tracker=evaluator.cost_tracker,
    )


@dataclass(frozen=True, slots=True)
class _Sources:
    """What the always-on rules read, each ``None`` where it does not exist in a role."""

    drops: DropCounter | None
    session_totals: Callable[[], tuple[int, int]] | None
    agreement: AgreementReader | None


def _rules(config: Config, evaluator: RAGEvaluator, sources: _Sources) -> list[Rule]:
    tracker = evaluator.cost_tracker
    if config.alert_rules_file:
        return load_rules(
            config.alert_rules_file,
            thresholds=evaluator.thresholds,
            cost_tracker=tracker,
            drop_counters=sources.drops,
            session_totals=sources.session_totals,
            agreement=sources.agreement,
        )
    rules = default_rules(evaluator.thresholds)
    if tracker.budget_usd_per_hour is not None:
        rules.append(budget_rule(tracker))
    return rules


def _add_watchdogs(alerts: AlertManager, sources: _Sources) -> None:
    """The rules that are on wherever what they read exists, whatever rules were given or loaded, unless one of
    those already reads it or has its name: dropped samples, failed sessions, tier agreement."""
    watchdogs: list[Rule] = []
    if sources.drops is not None:
        watchdogs.append(dropped_samples_rule(sources.drops))
    if sources.session_totals is not None:
        watchdogs.append(failed_sessions_rule(sources.session_totals))
    if sources.agreement is not None:
        watchdogs.append(tier_agreement_rule(sources.agreement))
    for rule in watchdogs:
        read = getattr(rule, "read", None)
        if not any(r.name == rule.name or getattr(r, "read", None) == read for r in alerts.rules):
            alerts.add_rule(rule)


def _evaluator_process(config: Config, project: str, metrics_port: int | None, drops: DropCounter) -> ProcessHandler:
    """The handler that evaluates in ``python -m ragtriage.instrumentation.evaluator_process``.

    The files the child will read were read when ``config`` was made, so a broken one is found in the
    app, as with the thread, instead of in every child the handler starts."""
    command = [config.evaluator_python or sys.executable, "-m", "ragtriage.instrumentation.evaluator_process"]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    env = {**os.environ, **replace(config, project_name=project).to_env()}
    return ProcessHandler(command, env=env, drops=drops)


__all__ = ["ROLES", "DropCounter", "Role", "Runtime", "build", "build_evaluator", "drop_totals"]
