"""Attach ragtriage to the app's TracerProvider, or create one exporting to Phoenix.

Shaped like ``phoenix.otel.register()``: keyword-only arguments with
environment fallbacks, returns the TracerProvider it used.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ragtriage.alerts import AlertManager, AlertSink, Rule, dropped_samples_rule, load_rules, sinks_from_env
from ragtriage.config import Config
from ragtriage.dashboards.metrics import EvalMetrics, enable_metrics
from ragtriage.dashboards.prometheus import MetricsServer, serve_metrics
from ragtriage.evaluator.cache import RedisCache
from ragtriage.evaluator.calibration import load_calibration
from ragtriage.evaluator.cost import CostTracker
from ragtriage.evaluator.evaluator import RAGEvaluator
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.export.phoenix import PROJECT_ATTRIBUTE, PhoenixWriter, base_url
from ragtriage.judges.llm import LLMJudge
from ragtriage.span_processor.child_process import ProcessHandler
from ragtriage.span_processor.processor import EvalSpanProcessor, RAGSample, ResultWriter
from ragtriage.streams.queue import StreamPublisher

logger = logging.getLogger(__name__)
_lock = threading.Lock()


@dataclass
class _Installation:
    provider: TracerProvider
    processor: EvalSpanProcessor
    instrumentors: list[Any] = field(default_factory=list)
    metrics: EvalMetrics | None = None
    metrics_server: MetricsServer | None = None


_installed: _Installation | None = None


class DropCounter:
    """``(dropped, offered)`` RAG traces, read by the dropped-samples alert.

    The span processor is built after the evaluator whose rules read this, so it is bound later
    (``processor``); an evaluator process has no processor of its own and is sent the app process's
    totals instead (``totals``)."""

    def __init__(self) -> None:
        self.processor: EvalSpanProcessor | None = None
        self.totals = (0, 0)

    def __call__(self) -> tuple[int, int]:
        return self.totals if self.processor is None else drop_totals(self.processor.stats)


def drop_totals(stats: Mapping[str, int]) -> tuple[int, int]:
    """Traces dropped before evaluation (queue full; with an evaluator process also while none was running,
    or lost when it died) and traces offered, from :attr:`EvalSpanProcessor.stats`."""
    full = stats.get("samples_dropped_queue_full", 0)
    dropped = full + stats.get("child_dropped", 0) + stats.get("child_lost", 0)
    return dropped, full + stats.get("samples_queued", 0)


def watch_drops(alerts: AlertManager, drops: Callable[[], tuple[int, int]]) -> None:
    """Add the built-in dropped-samples rule, unless the rules already watch ``drops``."""
    if not any(r.name == "dropped_samples_high" or getattr(r, "read", None) is drops for r in alerts.rules):
        alerts.add_rule(dropped_samples_rule(drops))


def build_evaluator(
    config: Config,
    *,
    alert_sinks: Sequence[AlertSink] | None = None,
    alert_rules: Sequence[Rule] | None = None,
    drop_counters: Callable[[], tuple[int, int]] | None = None,
) -> RAGEvaluator:
    """The evaluator the configuration describes; with no judge URL or key, the free tiers alone.

    Alerts go to ``alert_sinks`` (default: the sinks the environment configures, and the log);
    rules come from ``alert_rules``, else ``RAGTRIAGE_ALERT_RULES_FILE``, else the built-in ones.
    A rules file's ``dropped`` rule reads ``drop_counters`` (without one, it is an error).
    """
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
    tracker = CostTracker(budget_usd_per_hour=config.budget_usd_per_hour)
    if alert_rules is None and config.alert_rules_file:
        alert_rules = load_rules(config.alert_rules_file, cost_tracker=tracker, drop_counters=drop_counters)
    calibrated: dict[str, Any] = {"confidence_threshold": config.confidence_threshold}
    if config.calibration_file:
        calibrated.update(load_calibration(config.calibration_file).evaluator_kwargs())
    return RAGEvaluator(
        **calibrated,
        local_judge=local,
        heavy_judge=heavy,
        sample_rate=config.sample_rate,
        cost_tracker=tracker,
        cache=RedisCache(config.redis_url) if config.redis_url else None,
        alert_sinks=sinks_from_env() if alert_sinks is None else alert_sinks,
        alert_rules=alert_rules,
    )


def instrument(
    *,
    tracer_provider: TracerProvider | None = None,
    endpoint: str | None = None,
    project_name: str | None = None,
    sample_rate: float | None = None,
    evaluator: RAGEvaluator | None = None,
    auto_instrument: bool = True,
    set_global: bool = True,
    writer: ResultWriter | None = None,
    on_result: Callable[[RAGSample, RAGEvaluationResult], None] | None = None,
    alert_sinks: Sequence[AlertSink] | None = None,
    alert_rules: Sequence[Rule] | None = None,
    meter_provider: MeterProvider | None = None,
    metrics_port: int | None = None,
    queue: str | None = None,
    **settings: Any,
) -> TracerProvider:
    """Evaluate every sampled RAG trace of this process in the background.

    ``settings`` are further :class:`~ragtriage.config.Config` fields
    (``local_judge_url=...``, ``max_queue_size=...``); ``on_result`` is called on
    the background thread after each evaluation. Calling it again returns the
    same provider without adding a second processor. ``alert_sinks``/``alert_rules`` configure
    alerts (see :func:`build_evaluator`); with your own ``evaluator``, configure them there.
    Metrics (``ragtriage.eval.*``) go to ``meter_provider`` (default: the global one); with
    ``metrics_port`` they are also served for Prometheus on that port (the ``prometheus`` extra).
    With ``queue="redis://..."`` (or ``RAGTRIAGE_QUEUE_URL``) samples are not evaluated here but
    appended to a Redis Stream for ``ragtriage worker`` processes (which judge, write back and alert).
    With ``evaluate_in="process"`` (or ``RAGTRIAGE_EVALUATE_IN=process``) they are judged, written back
    and alerted on by a child process built from the same settings, so evaluation never competes with
    the app for the GIL; ``metrics_port`` is then served by that child.
    """
    global _installed
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise TypeError(f"tracer_provider must be an opentelemetry.sdk.trace.TracerProvider, got {tracer_provider!r}")
    if evaluator is not None and not isinstance(evaluator, RAGEvaluator):
        raise TypeError(f"evaluator must be a RAGEvaluator, got {type(evaluator).__name__}")
    if evaluator is not None and sample_rate is not None:
        raise ValueError("sample_rate belongs to the evaluator when one is given: set RAGEvaluator(sample_rate=...)")
    if evaluator is not None and (alert_sinks is not None or alert_rules is not None):
        raise ValueError("alert_sinks/alert_rules belong to the evaluator when one is given: set them on RAGEvaluator")
    config = Config.from_env(
        endpoint=endpoint, project_name=project_name, sample_rate=sample_rate, queue_url=queue, **settings
    )
    if config.evaluate_in == "process" and not config.queue_url:
        in_process_only = {
            "evaluator": evaluator,
            "writer": writer,
            "on_result": on_result,
            "alert_sinks": alert_sinks,
            "alert_rules": alert_rules,
            "meter_provider": meter_provider,
        }
        given = [name for name, value in in_process_only.items() if value is not None]
        asked = settings.get("evaluate_in") is not None
        problem = None
        if given:
            problem = (
                f"{', '.join(given)} cannot cross into the evaluator process (evaluate_in='process'): configure "
                "it through settings and RAGTRIAGE_* variables, or use evaluate_in='thread'"
            )
        elif not _runnable(_python(config)):
            problem = (
                f"the evaluator process's interpreter {_python(config)!r} cannot be run: set evaluator_python "
                "(RAGTRIAGE_EVALUATOR_PYTHON) to a Python with ragtriage installed"
            )
            asked = asked or settings.get("evaluator_python") is not None
        if problem is not None and asked:
            raise ValueError(problem)
        if problem is not None:  # only the environment asked for it, the code cannot have it: the app must start
            logger.warning(
                "ragtriage: RAGTRIAGE_EVALUATE_IN=process ignored: %s; evaluating on a background thread", problem
            )
            config = replace(config, evaluate_in="thread")

    with _lock:
        if _installed is not None:
            if tracer_provider is None or tracer_provider is _installed.provider:
                return _installed.provider
            raise RuntimeError("ragtriage is already instrumenting another TracerProvider; call uninstrument() first")
        provider = tracer_provider or _global_sdk_provider()
        if provider is None:
            provider = TracerProvider(resource=Resource.create({PROJECT_ATTRIBUTE: config.project_name}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(config.endpoint))))
            if set_global:
                trace.set_tracer_provider(provider)
        existing = [p for p in _processors(provider) if isinstance(p, EvalSpanProcessor)]
        if existing:
            _installed = _Installation(provider, existing[0])
            return provider
        handler: StreamPublisher | ProcessHandler | None = None
        drops = DropCounter()
        if config.queue_url:  # evaluation happens in `ragtriage worker`: no judges, writer or alerts here
            handler = StreamPublisher(config.queue_url)
            evaluator = evaluator or RAGEvaluator(sample_rate=config.sample_rate, alert_sinks=())
        elif config.evaluate_in == "process":  # ... or in a child process that builds them from `config`
            handler = _evaluator_process(config, project_of(provider, config), metrics_port, drops)
            evaluator, metrics_port = RAGEvaluator(sample_rate=config.sample_rate, alert_sinks=()), None
        if writer is None and handler is None:
            writer = phoenix_writer(config, project_of(provider, config))
        evaluator = evaluator or build_evaluator(
            config, alert_sinks=alert_sinks, alert_rules=alert_rules, drop_counters=drops
        )
        processor = EvalSpanProcessor(
            evaluator,
            writer=writer,
            max_queue_size=config.max_queue_size,
            max_traces_in_flight=config.max_traces_in_flight,
            max_spans_per_trace=config.max_spans_per_trace,
            trace_ttl_s=config.trace_ttl_s,
            # a child evaluates max_concurrency at once; the parent only waits for its replies
            max_concurrency=config.max_queue_size if isinstance(handler, ProcessHandler) else config.max_concurrency,
            on_result=on_result,
            handler=handler,
        )
        drops.processor = processor
        if evaluator.alerts is not None:
            name_alerts(evaluator.alerts, project=project_of(provider, config), config=config)
            watch_drops(evaluator.alerts, drops)
        server = serve_metrics(metrics_port) if metrics_port is not None else None
        metrics = enable_metrics(
            evaluator, processor=processor, meter_provider=server.meter_provider if server else meter_provider
        )
        if evaluator.alerts is not None:
            evaluator.alerts.add_listener(lambda event: metrics.record_alert(event.rule, event.severity))
        provider.add_span_processor(processor)
        _installed = _Installation(provider, processor, metrics=metrics, metrics_server=server)
        if auto_instrument:
            _installed.instrumentors = _auto_instrument(provider)
        return provider


def _evaluator_process(
    config: Config, project: str, metrics_port: int | None, drops: Callable[[], tuple[int, int]]
) -> ProcessHandler:
    """The handler that evaluates in ``python -m ragtriage.instrumentation.evaluator_process``.

    The files the child will read are read here first, so a broken one fails ``instrument()`` at once,
    as it does with the thread, instead of crashing every child the handler starts."""
    if config.alert_rules_file:
        load_rules(config.alert_rules_file, cost_tracker=CostTracker(), drop_counters=drops)
    if config.calibration_file:
        load_calibration(config.calibration_file)
    command = [_python(config), "-m", "ragtriage.instrumentation.evaluator_process"]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    env = {**os.environ, **replace(config, project_name=project).to_env()}
    return ProcessHandler(command, env=env, drops=drops)


def _python(config: Config) -> str:
    return config.evaluator_python or sys.executable


def _runnable(path: str) -> bool:
    return bool(path) and shutil.which(path) is not None


def uninstrument() -> None:
    """Remove ragtriage's processor (after finishing queued evaluations) and its instrumentors."""
    global _installed
    with _lock:
        installation, _installed = _installed, None
    if installation is None:
        return
    multi = installation.provider._active_span_processor
    with multi._lock:
        multi._span_processors = tuple(p for p in multi._span_processors if p is not installation.processor)
    installation.processor.shutdown()
    if installation.metrics is not None:
        installation.metrics.disable()
    if installation.metrics_server is not None:
        installation.metrics_server.shutdown()
    for instrumentor in installation.instrumentors:
        try:
            instrumentor.uninstrument()
        except Exception:
            logger.warning("ragtriage: could not uninstrument %r", instrumentor, exc_info=True)


def installed_processor() -> EvalSpanProcessor | None:
    """The processor :func:`instrument` installed, for its ``stats`` and ``force_flush``."""
    return _installed.processor if _installed else None


def project_of(provider: TracerProvider, config: Config) -> str:
    """The app's Phoenix project: its resource attribute, else the configured name."""
    return str(provider.resource.attributes.get(PROJECT_ATTRIBUTE, config.project_name))


def phoenix_writer(config: Config, project: str | None = None) -> PhoenixWriter | None:
    """The write-back the configuration asks for (``None`` with ``write_back`` off)."""
    if not config.write_back:
        return None
    return PhoenixWriter(
        endpoint=config.endpoint, project_name=project or config.project_name, api_key=config.phoenix_api_key
    )


def name_alerts(alerts: AlertManager, *, project: str, config: Config) -> None:
    """Alerts say which project they are about and link to its Phoenix."""
    alerts.project = project
    alerts.phoenix_url = base_url(config.endpoint)


def _global_sdk_provider() -> TracerProvider | None:
    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


def _processors(provider: TracerProvider) -> tuple[Any, ...]:
    return getattr(provider._active_span_processor, "_span_processors", ())


def _traces_url(endpoint: str) -> str:
    return base_url(endpoint) + "/v1/traces"


def _auto_instrument(provider: TracerProvider) -> list[Any]:
    """Enable every installed OpenInference instrumentor (entry point group ``openinference_instrumentor``)."""
    enabled = []
    for entry_point in entry_points(group="openinference_instrumentor"):
        try:
            instrumentor = entry_point.load()()
            if getattr(instrumentor, "is_instrumented_by_opentelemetry", False):
                continue
            instrumentor.instrument(tracer_provider=provider)
            enabled.append(instrumentor)
        except Exception as exc:
            warnings.warn(f"ragtriage: could not enable OpenInference instrumentor {entry_point.name!r}: {exc}",
                          stacklevel=3)  # fmt: skip
    return enabled
