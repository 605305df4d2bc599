"""instrument()/uninstrument() and the configuration they read."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

import ragtriage
from ragtriage import Config, EvalSpanProcessor, RAGEvaluator
from ragtriage.instrumentation import installed_processor, installed_runtime
from ragtriage.runtime import build_evaluator
from tests.receivers import Receiver
from tests.test_span_processor import rag_request
from tests.test_streams import wait_until


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    ragtriage.uninstrument()


def processors(provider: TracerProvider) -> tuple:
    return provider._active_span_processor._span_processors


def test_adds_one_processor_to_the_apps_provider_and_removes_it() -> None:
    provider = TracerProvider()
    before = processors(provider)
    returned = ragtriage.instrument(tracer_provider=provider, write_back=False, auto_instrument=False)
    assert returned is provider
    assert ragtriage.instrument(tracer_provider=provider, write_back=False) is provider  # twice: still one
    added = [p for p in processors(provider) if isinstance(p, EvalSpanProcessor)]
    assert len(added) == 1 and added[0] is installed_processor()
    ragtriage.uninstrument()
    assert processors(provider) == before
    assert installed_processor() is None
    ragtriage.uninstrument()  # idempotent


def test_embedded_default_runs_the_free_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "RAGTRIAGE_LOCAL_JUDGE_URL", "RAGTRIAGE_HEAVY_JUDGE_URL"):
        monkeypatch.delenv(name, raising=False)
    provider = TracerProvider()
    ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False)
    runtime = installed_runtime()
    assert runtime is not None and runtime.evaluator is not None
    evaluator = runtime.evaluator
    assert evaluator.local_judge is None and evaluator.heavy_judge is None and evaluator.sample_rate == 1.0


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTRIAGE_SAMPLE_RATE", "0.3")
    monkeypatch.setenv("RAGTRIAGE_LOCAL_JUDGE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("PHOENIX_PROJECT_NAME", "shop")
    config = Config.from_env()
    assert (config.sample_rate, config.local_judge_url, config.project_name) == (
        0.3,
        ("http://127.0.0.1:8000/v1",),
        "shop",
    )
    assert "sk-test" not in repr(config)
    assert Config.from_env(sample_rate=0.9).sample_rate == 0.9  # explicit beats env
    evaluator = build_evaluator(config)
    assert evaluator.local_judge is not None and evaluator.heavy_judge is not None
    assert evaluator.heavy_judge.model == "gpt-4o-mini"


def test_a_contradictory_environment_warns_and_evaluates_on_the_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAGTRIAGE_EVALUATE_IN", "queue")  # ... but no RAGTRIAGE_QUEUE_URL
    with caplog.at_level(logging.WARNING):
        assert Config.from_env().evaluate_in == "thread"
    assert "needs queue_url" in caplog.text
    monkeypatch.setenv("RAGTRIAGE_QUEUE_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("RAGTRIAGE_EVALUATE_IN", "process")
    config = Config.from_env()
    assert (config.evaluate_in, config.queue_url) == ("thread", None)
    # the code decides: the environment's queue URL gives way to it
    assert Config.from_env(evaluate_in="process").evaluate_in == "process"


def test_bad_environment_warns_and_uses_the_default(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv("RAGTRIAGE_SAMPLE_RATE", "lots")
    monkeypatch.setenv("RAGTRIAGE_MAX_QUEUE_SIZE", "-5")
    with caplog.at_level(logging.WARNING):
        config = Config.from_env()
    assert config.sample_rate == 0.1 and config.max_queue_size == 2048
    assert "RAGTRIAGE_SAMPLE_RATE" in caplog.text and "RAGTRIAGE_MAX_QUEUE_SIZE" in caplog.text


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAGTRIAGE_SAMPLERATE", "1")  # RAGTRIAGE_SAMPLE_RATE: the default 0.1 would stay, silently
    with caplog.at_level(logging.WARNING):
        assert Config.from_env().sample_rate == 0.1
        Config.from_env()
    warnings = [r.getMessage() for r in caplog.records if "RAGTRIAGE_SAMPLERATE" in r.getMessage()]
    assert warnings == [
        "ragtriage: RAGTRIAGE_SAMPLERATE is set but is no ragtriage setting, so it is ignored; "
        "did you mean RAGTRIAGE_SAMPLE_RATE?"
    ]  # once per process, not once per read


def test_evaluate_in_process_from_the_environment_never_stops_an_app_that_passes_objects(
    monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setenv("RAGTRIAGE_EVALUATE_IN", "process")
    results: list[object] = []
    provider = TracerProvider()
    try:
        with caplog.at_level(logging.WARNING):
            ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False,
                                 on_result=lambda sample, result: results.append(result))  # fmt: skip
        assert "RAGTRIAGE_EVALUATE_IN=process ignored: on_result" in caplog.text
        rag_request(provider)
        processor = installed_processor()
        assert processor is not None and processor.force_flush(10_000)
        assert len(results) == 1 and not any(key.startswith("child_") for key in processor.stats)
    finally:
        ragtriage.uninstrument()
        provider.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"sample_rate": 2.0}, ValueError, "sample_rate"),
        ({"endpoint": "localhost:6006"}, ValueError, "endpoint"),
        ({"tracer_provider": object()}, TypeError, "tracer_provider"),
        ({"evaluator": "x"}, TypeError, "evaluator"),
        ({"max_queue_size": 0}, ValueError, "max_queue_size"),
        ({"no_such_setting": 1}, TypeError, "no_such_setting"),
        ({"evaluator": RAGEvaluator(), "sample_rate": 0.5}, ValueError, "sample_rate"),
        ({"evaluate_in": "sideways"}, ValueError, "evaluate_in"),
        ({"evaluate_in": "process", "on_result": print}, ValueError, "on_result"),
        ({"evaluate_in": "process", "evaluator": RAGEvaluator()}, ValueError, "evaluator"),
        ({"evaluate_in": "queue"}, ValueError, "queue_url"),
        ({"queue_url": "redis://127.0.0.1:6379/0"}, ValueError, "evaluate_in='queue'"),
        ({"evaluate_in": "queue", "queue_url": "redis://127.0.0.1:6379/0", "writer": object()}, ValueError, "writer"),
    ],
)
def test_bad_arguments_raise_at_once(kwargs: dict, error: type[Exception], named: str) -> None:
    with pytest.raises(error, match=named):
        ragtriage.instrument(**kwargs)
    assert installed_processor() is None


def test_creates_a_provider_when_the_app_has_none() -> None:
    provider = ragtriage.instrument(
        endpoint="http://127.0.0.1:9", project_name="p", set_global=False, write_back=False, auto_instrument=False
    )
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["openinference.project.name"] == "p"
    kinds = [type(p).__name__ for p in processors(provider)]
    assert kinds == ["BatchSpanProcessor", "EvalSpanProcessor"]
    provider.shutdown()


def test_auto_instrument_enables_installed_openinference_instrumentors() -> None:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    provider = TracerProvider()
    ragtriage.instrument(tracer_provider=provider, write_back=False, auto_instrument=True)
    assert OpenAIInstrumentor().is_instrumented_by_opentelemetry
    ragtriage.uninstrument()
    assert not OpenAIInstrumentor().is_instrumented_by_opentelemetry


def test_alerts_are_wired_to_the_project_phoenix_and_dropped_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.resources import Resource

    for name in ("RAGTRIAGE_SLACK_WEBHOOK_URL", "RAGTRIAGE_PAGERDUTY_ROUTING_KEY", "RAGTRIAGE_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": "shop"}))
    ragtriage.instrument(
        tracer_provider=provider, write_back=False, auto_instrument=False, endpoint="http://127.0.0.1:6006/v1/traces"
    )
    runtime = installed_runtime()
    assert runtime is not None and runtime.alerts is not None
    alerts = runtime.alerts
    assert (alerts.project, alerts.phoenix_url) == ("shop", "http://127.0.0.1:6006")
    names = [r.name for r in alerts.rules]
    assert {"heavy_share_high", "tier_distribution_drift", "dropped_samples_high"} <= set(names)
    assert [s.name for s in alerts.sinks] == ["log"]


def test_metrics_port_serves_the_evaluations_of_instrumented_traces() -> None:
    import httpx

    from ragtriage.testing.redis_server import free_port

    provider = TracerProvider()
    port = free_port()
    ragtriage.instrument(
        tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False, metrics_port=port
    )
    tracer = provider.get_tracer("app")
    retriever = {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.content": "2001"}
    with (
        tracer.start_as_current_span("rag", attributes={"input.value": "When?", "output.value": "In 1999."}),
        tracer.start_as_current_span("r", attributes=retriever),
    ):
        pass
    assert provider.force_flush(10_000)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    [line] = [x for x in body.splitlines() if x.startswith("ragtriage_eval_evaluations_total{")]
    assert 'tier="deterministic"' in line and 'verdict="fail"' in line and line.endswith(" 1.0")
    ragtriage.uninstrument()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics")


@pytest.mark.parametrize("evaluate_in", ["thread", "process"])
def test_a_rules_files_dropped_rule_alerts_on_traces_the_app_dropped(
    evaluate_in: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RAGTRIAGE_SLACK_WEBHOOK_URL", "RAGTRIAGE_PAGERDUTY_ROUTING_KEY", "RAGTRIAGE_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    rules = tmp_path / "rules.toml"
    # (a budget rule too: building an evaluator process checks the file with stand-ins for both counters)
    rules.write_text('[[rule]]\ntype = "dropped"\nlimit = 0.5\nmin_samples = 5\n\n[[rule]]\ntype = "budget"\n')
    provider = TracerProvider()
    with Receiver() as webhook:
        monkeypatch.setenv("RAGTRIAGE_ALERT_WEBHOOK_URL", webhook.url)  # reaches an evaluator process too
        ragtriage.instrument(
            tracer_provider=provider,
            sample_rate=1.0,
            write_back=False,
            auto_instrument=False,
            max_queue_size=1,
            alert_rules_file=str(rules),
            evaluate_in=evaluate_in,
        )
        processor = installed_processor()
        assert processor is not None
        rag_request(provider)
        assert processor.force_flush(60_000)  # evaluated: the rule's first look, nothing dropped yet
        time.sleep(1.1)  # rules are looked at again with a result at least a second later
        for _ in range(20):  # within one poll of the queue: one or two are taken, the rest dropped
            rag_request(provider)
        dropped = processor.stats["samples_dropped_queue_full"]
        assert dropped >= 10
        assert processor.force_flush(60_000)
        wait_until(lambda: webhook.received)
        ragtriage.uninstrument()
    [event] = webhook.received
    assert (event["rule"], event["state"]) == ("dropped_samples_high", "firing")
    assert 0.5 < event["value"] <= 1.0  # dropped / offered since the first look (a poll may split the burst)


def test_the_evaluator_process_runs_on_the_configured_interpreter(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    python = tmp_path / "python"  # what uWSGI users point at: a real Python, here one that leaves a mark
    python.write_text(f'#!/bin/sh\necho "$@" > {marker}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    provider = TracerProvider()
    ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False,
                         evaluate_in="process", evaluator_python=str(python))  # fmt: skip
    processor = installed_processor()
    assert processor is not None
    rag_request(provider)
    assert processor.force_flush(60_000)
    assert processor.stats["child_ok"] == 1
    assert marker.read_text().split() == ["-m", "ragtriage.instrumentation.evaluator_process"]


def test_an_interpreter_that_cannot_run_is_an_error_when_asked_for_and_a_fallback_when_set_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    with pytest.raises(ValueError, match="evaluator_python"):
        ragtriage.instrument(tracer_provider=TracerProvider(), evaluate_in="process", evaluator_python="/no/python")
    assert installed_processor() is None
    monkeypatch.setenv("RAGTRIAGE_EVALUATE_IN", "process")
    monkeypatch.setenv("RAGTRIAGE_EVALUATOR_PYTHON", "/no/python")
    provider = TracerProvider()
    with caplog.at_level(logging.WARNING):
        ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False)
    assert "RAGTRIAGE_EVALUATE_IN=process ignored" in caplog.text and "/no/python" in caplog.text
    rag_request(provider)
    processor = installed_processor()
    assert processor is not None and processor.force_flush(10_000)
    assert processor.stats["evaluations_ok"] == 1 and not any(key.startswith("child_") for key in processor.stats)
