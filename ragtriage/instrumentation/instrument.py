"""Attach ragtriage to the app's TracerProvider, or create one exporting to Phoenix.

Shaped like ``phoenix.otel.register()``: keyword-only arguments with
environment fallbacks, returns the TracerProvider it used.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import quote

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ragtriage._log_hygiene import redact
from ragtriage.alerts import AlertSink, Rule
from ragtriage.config import Config
from ragtriage.evaluator.evaluator import RAGEvaluator
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.export.phoenix import PROJECT_ATTRIBUTE, auth_headers, base_url, parse_headers
from ragtriage.instrumentation._provider import add_processor, export_target, flush_others, processors
from ragtriage.pipeline import ResultWriter
from ragtriage.runtime import Runtime, build
from ragtriage.sample import RAGSample
from ragtriage.span_processor.processor import EvalSpanProcessor

logger = logging.getLogger(__name__)
_lock = threading.Lock()


@dataclass
class _Installation:
    provider: TracerProvider
    processor: EvalSpanProcessor
    runtime: Runtime | None = None
    instrumentors: list[Any] = field(default_factory=list)


_installed: _Installation | None = None
#: In-process objects that cannot cross into the evaluator process or a worker.
_IN_PROCESS_ONLY = ("evaluator", "writer", "on_result", "alert_sinks", "alert_rules", "meter_provider")


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
    **settings: Any,
) -> TracerProvider:
    """Evaluate every sampled RAG trace of this process in the background.

    Adds an :class:`~ragtriage.span_processor.EvalSpanProcessor` to the app's SDK ``TracerProvider``
    (``tracer_provider``, else the global one; with neither, a new one exporting OTLP to Phoenix).
    Calling it again returns the same provider without adding a second processor.

    Args:
        tracer_provider: the provider to attach to.
        endpoint: Phoenix (``PHOENIX_COLLECTOR_ENDPOINT``, default ``http://localhost:6006``).
        project_name: Phoenix project (``PHOENIX_PROJECT_NAME``); the provider's resource wins.
        sample_rate: share of traces evaluated, decided per trace id (``RAGTRIAGE_SAMPLE_RATE``, 0.1).
        evaluator: your own :class:`~ragtriage.RAGEvaluator` instead of one built from the settings.
        auto_instrument: enable every installed OpenInference instrumentor.
        set_global: make a provider created here the global one.
        writer: where results go instead of Phoenix (a ``ResultWriter``).
        on_result: called with ``(sample, result)`` on the background thread after each evaluation.
        alert_sinks, alert_rules: instead of the sinks the settings name (``RAGTRIAGE_SLACK_WEBHOOK_URL``,
            ...) and the rules file (``RAGTRIAGE_ALERT_RULES_FILE``) or built-in rules.
        meter_provider: where ``ragtriage.eval.*`` metrics go (default: the global MeterProvider).
        metrics_port: also serve them for Prometheus on this port (the ``prometheus`` extra), on
            ``RAGTRIAGE_METRICS_HOST`` (127.0.0.1 unless it says otherwise).
        **settings: any other :class:`~ragtriage.Config` field, e.g. ``local_judge_url=...``,
            ``evaluate_in="process"`` (judge in a child process, off the app's GIL), or
            ``evaluate_in="queue", queue_url="redis://..."`` (judge in ``ragtriage worker`` processes).

    Returns:
        The ``TracerProvider`` it attached to.

    Raises:
        ValueError, TypeError: a bad or contradictory argument, named in the message. A bad environment
            variable is logged and its default used instead.

    Example::

        import ragtriage

        ragtriage.instrument(sample_rate=0.2, local_judge_url="http://vllm:8000/v1")
    """
    global _installed
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise TypeError(f"tracer_provider must be an opentelemetry.sdk.trace.TracerProvider, got {tracer_provider!r}")
    if evaluator is not None and not isinstance(evaluator, RAGEvaluator):
        raise TypeError(f"evaluator must be a RAGEvaluator, got {type(evaluator).__name__}")
    if evaluator is not None and sample_rate is not None:
        raise ValueError("sample_rate belongs to the evaluator when one is given: set RAGEvaluator(sample_rate=...)")
    config = Config.from_env(endpoint=endpoint, project_name=project_name, sample_rate=sample_rate, **settings)
    given = {"evaluator": evaluator, "writer": writer, "on_result": on_result, "alert_sinks": alert_sinks,
             "alert_rules": alert_rules, "meter_provider": meter_provider}  # fmt: skip
    config = _where_to_evaluate(config, [name for name in _IN_PROCESS_ONLY if given[name] is not None], settings)

    with _lock:
        if _installed is not None:
            if tracer_provider is None or tracer_provider is _installed.provider:
                return _installed.provider
            raise RuntimeError("ragtriage is already instrumenting another TracerProvider; call uninstrument() first")
        provider = tracer_provider or _global_sdk_provider()
        if provider is None:
            provider = TracerProvider(resource=Resource.create({PROJECT_ATTRIBUTE: config.project_name}))
            headers = parse_headers(config.phoenix_client_headers) | auth_headers(config.phoenix_api_key)
            exporter = OTLPSpanExporter(endpoint=_traces_url(config.endpoint), headers=headers or None)
            provider.add_span_processor(BatchSpanProcessor(exporter))
            if set_global:
                trace.set_tracer_provider(provider)
        else:
            set_here = {name for name, value in {"endpoint": endpoint, **settings}.items() if value is not None}
            in_env = {name for name in _INHERITED if Config.in_env(name)}
            config = _write_back_where_spans_go(config, provider, set_here | in_env)
        existing = [p for p in processors(provider) if isinstance(p, EvalSpanProcessor)]
        if existing:
            _installed = _Installation(provider, existing[0])
            return provider
        runtime = build(
            config,
            "app",
            project=project_of(provider, config),
            evaluator=evaluator,
            writer=writer,
            on_result=on_result,
            alert_sinks=alert_sinks,
            alert_rules=alert_rules,
            metrics_port=metrics_port,
        )
        processor = runtime.processor
        assert processor is not None  # role "app" builds one
        in_child = config.evaluate_in == "process"
        # In process mode the child serves metrics_port; here, the app's own drop counts.
        runtime.start_metrics(
            processor=processor, meter_provider=meter_provider, port=None if in_child else metrics_port
        )
        add_processor(provider, processor)  # next to register()'s exporter, not instead of it
        processor.flush_app_spans = functools.partial(flush_others, provider, processor)
        _installed = _Installation(provider, processor, runtime)
        if auto_instrument:
            _installed.instrumentors = _auto_instrument(provider)
        return provider


#: What write-back takes from the app's exporter unless an argument or the environment sets it.
_INHERITED = ("endpoint", "phoenix_api_key", "phoenix_client_headers")


def _write_back_where_spans_go(config: Config, provider: TracerProvider, given: set[str]) -> Config:
    """Write back to the Phoenix the app's provider exports to (``phoenix.otel.register()``'s endpoint, API key
    and headers), except what is ``given`` (in code or the environment): the evaluation lands next to the trace it
    scores. Never raises: what cannot be inherited is logged, and the configured value kept."""
    target = export_target(provider)
    if target is None:
        return config
    inherited: dict[str, Any] = {}
    if "endpoint" not in given:
        if target.endpoint is not None and target.endpoint.startswith(("http://", "https://")):
            inherited["endpoint"] = base_url(target.endpoint)
        else:
            logger.warning(
                "ragtriage: the TracerProvider exports to %s, which is not Phoenix's HTTP endpoint (gRPC?); "
                "evaluations are written back to %s: pass endpoint= (or PHOENIX_COLLECTOR_ENDPOINT) if that is wrong",
                redact(str(target.endpoint or "a gRPC endpoint")),
                redact(config.endpoint),
            )
    if "phoenix_api_key" not in given and target.api_key:
        inherited["phoenix_api_key"] = target.api_key
    if "phoenix_client_headers" not in given and target.headers:
        inherited["phoenix_client_headers"] = tuple(f"{quote(k)}={quote(v)}" for k, v in target.headers.items())
    try:
        return replace(config, **inherited) if inherited else config
    except ValueError as exc:  # e.g. an endpoint without a scheme; the app's own export is not ours to judge
        logger.warning("ragtriage: not writing back where the TracerProvider exports (%s); using the settings", exc)
        return config


def _where_to_evaluate(config: Config, in_process_objects: list[str], settings: Mapping[str, Any]) -> Config:
    """``evaluate_in`` as asked, when it can be had; else an error (asked in code) or the thread (asked only
    by the environment: a deployment setting never stops the app from starting)."""
    if config.evaluate_in == "thread":
        return config
    asked = settings.get("evaluate_in") is not None
    problem = None
    if in_process_objects:
        problem = (
            f"{', '.join(in_process_objects)} cannot cross into {_WHERE[config.evaluate_in]} "
            f"(evaluate_in={config.evaluate_in!r}): configure it through settings and RAGTRIAGE_* variables, "
            "or use evaluate_in='thread'"
        )
    elif config.evaluate_in == "process" and not _runnable(config.evaluator_python or sys.executable):
        problem = (
            f"the evaluator process's interpreter {config.evaluator_python or sys.executable!r} cannot be run: "
            "set evaluator_python (RAGTRIAGE_EVALUATOR_PYTHON) to a Python with ragtriage installed"
        )
        asked = asked or settings.get("evaluator_python") is not None
    if problem is None:
        return config
    if asked:
        raise ValueError(problem)
    logger.warning("ragtriage: RAGTRIAGE_EVALUATE_IN=%s ignored: %s; evaluating on a background thread",
                   config.evaluate_in, problem)  # fmt: skip
    return replace(config, evaluate_in="thread", queue_url=None)


_WHERE = {"process": "the evaluator process", "queue": "ragtriage worker"}


def _runnable(path: str) -> bool:
    return bool(path) and shutil.which(path) is not None


def uninstrument() -> None:
    """Remove ragtriage's processor (after finishing queued evaluations) and its instrumentors."""
    global _installed
    with _lock:
        installation, _installed = _installed, None
    if installation is None:
        return
    # The SDK has no public way to remove a span processor (TracerProvider has add_span_processor only), so the
    # processor is taken out of the provider's own tuple, under the lock the SDK adds with.
    multi = installation.provider._active_span_processor
    with multi._lock:
        multi._span_processors = tuple(p for p in multi._span_processors if p is not installation.processor)
    installation.processor.shutdown()
    if installation.runtime is not None:
        installation.runtime.stop_metrics()
    for instrumentor in installation.instrumentors:
        try:
            instrumentor.uninstrument()
        except Exception:
            logger.warning("ragtriage: could not uninstrument %r", instrumentor, exc_info=True)


def installed_processor() -> EvalSpanProcessor | None:
    """The processor :func:`instrument` installed (``None`` before), for its ``stats`` and ``force_flush``.

    Example::

        import ragtriage

        ragtriage.instrument(sample_rate=1.0)
        ...  # the app serves a few requests
        print(ragtriage.installed_processor().stats)  # traces_sampled, samples_queued, traces_skipped_no_retrieval, ...
    """
    return _installed.processor if _installed else None


def installed_runtime() -> Runtime | None:
    """What :func:`instrument` built around the processor: its pipeline, alerts and metrics."""
    return _installed.runtime if _installed else None


def project_of(provider: TracerProvider, config: Config) -> str:
    """The app's Phoenix project: its resource attribute, else the configured name."""
    return str(provider.resource.attributes.get(PROJECT_ATTRIBUTE, config.project_name))


def _global_sdk_provider() -> TracerProvider | None:
    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


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
