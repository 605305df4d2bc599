"""Metrics of real evaluations, read back with the SDK's InMemoryMetricReader and over a real /metrics scrape."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from typer.testing import CliRunner

from ragtriage import EvalSpanProcessor, RAGEvaluationResult, RAGEvaluator
from ragtriage.cli import app
from ragtriage.dashboards import enable_metrics, serve_metrics
from ragtriage.dashboards.grafana import grafana_dashboard
from ragtriage.dashboards.metrics import SPECS
from ragtriage.dashboards.prometheus import prometheus_names
from ragtriage.pipeline import Pipeline
from ragtriage.sample import RAGSample
from ragtriage.sessions import SessionScorer
from ragtriage.testing import JudgeServer, Reply, verdict_json

Q = "What is the capital of France?"
A = "Paris is the capital of France."
CONTEXTS = ["Paris is the capital and largest city of France.", "Lyon is a city in France."]
DOCS = [{"index": 1, "relevance": 1.0}, {"index": 2, "relevance": 0.2}]
HEAVY = Reply(
    verdict_json(
        documents=DOCS,
        claims=[{"claim": "Paris is the capital", "supported": True, "context_index": 1}],
        confidence=0.95,
    ),
    prompt_tokens=1000,
    completion_tokens=100,
)

Build = Callable[..., RAGEvaluator]  # the `make` fixture of conftest.py


async def run_mix(
    evaluator: RAGEvaluator, judge_server: JudgeServer, heavy_server: JudgeServer
) -> list[RAGEvaluationResult]:
    """One evaluation down each path: local (after a retry), heavy, cache, judge error, deterministic."""
    heavy_server.default = HEAVY
    judge_server.push(
        Reply(status=503, body='{"error": {"message": "overloaded"}}'),
        Reply(verdict_json(documents=DOCS, faithfulness=0.95, confidence=0.95)),
    )
    results = [await evaluator.evaluate(Q, A, CONTEXTS)]
    judge_server.push(Reply(verdict_json(documents=DOCS, confidence=0.3)))
    results.append(await evaluator.evaluate("Which city is the capital of France?", A, CONTEXTS))
    results.append(await evaluator.evaluate(Q, A, CONTEXTS))
    judge_server.push(Reply(status=400, body='{"error": {"message": "bad"}}'))
    heavy_server.push(Reply(status=400, body='{"error": {"message": "bad"}}'))
    results.append(await evaluator.evaluate("Is Paris in France?", "Yes, Paris is in France.", CONTEXTS))
    results.append(await evaluator.evaluate(Q, "Paris has been the capital since 1794.", CONTEXTS))
    assert [(r.tier, r.status) for r in results] == [
        ("local", "ok"),
        ("heavy", "ok"),
        ("cache", "ok"),
        (None, "judge_error"),
        ("deterministic", "ok"),
    ]
    return results


async def audit_one(evaluator: RAGEvaluator, judge_server: JudgeServer) -> None:
    """One confident local decision, audited by the heavy judge (which agrees: ``HEAVY`` passes)."""
    evaluator.audit_rate = 1.0
    judge_server.push(Reply(verdict_json(documents=DOCS, faithfulness=0.95, confidence=0.95)))
    result = await evaluator.evaluate("Is Paris the capital of France?", A, CONTEXTS)
    assert result.tier == "local"
    await evaluator.drain_audits()
    evaluator.audit_rate = 0.0


def points(reader: InMemoryMetricReader) -> dict[str, tuple[Any, list[Any]]]:
    """name -> (the metric, its data points)."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: (metric, list(metric.data.data_points))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def value(found: dict[str, tuple[Any, list[Any]]], name: str, **attributes: str) -> Any:
    matches = [p for p in found[name][1] if dict(p.attributes) == attributes]
    assert len(matches) == 1, (name, attributes, [dict(p.attributes) for p in found[name][1]])
    return matches[0]


async def test_metrics_of_real_evaluations(make: Build, judge_server: JudgeServer, heavy_server: JudgeServer) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    evaluator = make(local_retries=1)
    metrics = enable_metrics(evaluator, meter_provider=provider)
    assert enable_metrics(evaluator, meter_provider=provider) is metrics  # idempotent: nothing counted twice
    results = await run_mix(evaluator, judge_server, heavy_server)
    metrics.record_alert("heavy_vector_share", "warning")

    found = points(reader)
    # no processor given: no counts of traces dropped or skipped before evaluation; no session closed, no audit yet
    assert set(found) == {spec.name for spec in SPECS} - {
        "ragtriage.eval.samples.dropped",
        "ragtriage.eval.traces.skipped",
        "ragtriage.eval.sessions",
        "ragtriage.eval.session.failed_share",
        "ragtriage.eval.audits",
        "ragtriage.eval.tier_agreement",
    }
    for spec in SPECS:
        if spec.name in found:
            assert (found[spec.name][0].unit, found[spec.name][0].description) == (spec.unit, spec.description)

    evals = "ragtriage.eval.evaluations"
    assert value(found, evals, tier="local", status="ok", verdict="pass").value == 1
    assert value(found, evals, tier="heavy", status="ok", verdict="pass").value == 1
    assert value(found, evals, tier="cache", status="ok", verdict="pass").value == 1
    assert value(found, evals, tier="none", status="judge_error", verdict="uncertain").value == 1
    assert value(found, evals, tier="deterministic", status="ok", verdict="fail").value == 1
    assert value(found, "ragtriage.eval.heavy_share").value == pytest.approx(1 / 4)  # of the 4 decided

    faithfulness = value(found, "ragtriage.eval.score", metric="faithfulness")
    judged = [r.faithfulness for r in results if r.judged and r.faithfulness is not None]
    # the free-tier fail's implied 0 is not in the histogram: it would pull every mean toward the failures alone
    assert any(not r.judged and r.faithfulness == 0.0 for r in results)
    assert faithfulness.count == len(judged) and faithfulness.sum == pytest.approx(sum(judged))
    assert list(faithfulness.explicit_bounds)[:3] == [0.1, 0.2, 0.3]

    heavy_cost = sum(t.cost_usd for r in results for t in r.tiers if t.tier == "heavy")
    assert heavy_cost > 0
    assert value(found, "ragtriage.eval.cost", tier="heavy").value == pytest.approx(heavy_cost)
    assert value(found, "ragtriage.eval.duration", tier="cache").count == 1
    tier_steps = {
        (p.attributes["tier"], p.attributes["status"]): p.count for p in found["ragtriage.eval.tier.duration"][1]
    }
    assert tier_steps[("heavy", "ok")] == 1 and tier_steps[("heavy", "error")] == 1
    assert tier_steps[("local", "ok")] == 2 and tier_steps[("deterministic", "ok")] == 4

    assert value(found, "ragtriage.eval.cache.lookups", result="hit").value == 1
    assert value(found, "ragtriage.eval.cache.lookups", result="miss").value == 4
    assert value(found, "ragtriage.eval.judge.errors", tier="local").value == 1
    assert value(found, "ragtriage.eval.judge.errors", tier="heavy").value == 1
    assert value(found, "ragtriage.eval.judge.retries", tier="local").value == evaluator.local_judge.retries == 1
    assert value(found, "ragtriage.eval.alerts", rule="heavy_vector_share", severity="warning").value == 1

    await audit_one(evaluator, judge_server)
    found = points(reader)
    assert value(found, "ragtriage.eval.audits", tier="local", auditor="heavy", outcome="agree").value == 1
    assert value(found, "ragtriage.eval.cost", tier="audit").value == pytest.approx(evaluator.audits.cost_usd)
    agreement = "ragtriage.eval.tier_agreement"
    assert value(found, agreement, tier="local", stat="agreement", bound="value").value == 1.0
    assert value(found, agreement, tier="local", stat="agreement", bound="low").value == pytest.approx(0.2065, abs=1e-3)
    assert value(found, agreement, tier="local", stat="agreement", bound="high").value == 1.0
    assert not [p for p in found[agreement][1] if p.attributes["stat"] == "fail_precision"]  # no fail audited

    metrics.disable()
    await evaluator.evaluate("Is Lyon in France?", "Lyon is in France.", CONTEXTS)
    assert sum(p.value for p in points(reader)[evals][1]) == 6
    provider.shutdown()


def rag_trace(provider: TracerProvider, i: int) -> None:
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("rag", attributes={"input.value": f"{Q} ({i})"}) as root:
        attrs = {"openinference.span.kind": "RETRIEVER"}
        for j, doc in enumerate(CONTEXTS):
            attrs[f"retrieval.documents.{j}.document.content"] = doc
        with tracer.start_as_current_span("retrieve", attributes=attrs):
            pass
        root.set_attribute("output.value", A)


async def test_dropped_samples_come_from_the_processor(make: Build, judge_server: JudgeServer) -> None:
    release = threading.Event()
    judge_server.default = Reply(verdict_json(documents=DOCS, confidence=0.95), block=release)
    evaluator = make(heavy=False, local_retries=1)
    processor = EvalSpanProcessor(Pipeline(evaluator), sample_rate=1.0, max_queue_size=1, max_concurrency=1)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(processor)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    enable_metrics(evaluator, processor=processor, meter_provider=meter_provider)
    try:
        for i in range(6):  # one in the judge, one waiting for a slot, one queued: the rest must be dropped
            rag_trace(tracer_provider, i)
        dropped = value(points(reader), "ragtriage.eval.samples.dropped", reason="queue_full").value
        assert dropped >= 3
        assert dropped == processor.stats["samples_dropped_queue_full"]
    finally:
        release.set()
        assert processor.force_flush(20_000)
        tracer_provider.shutdown()
        meter_provider.shutdown()


def series_names(exposition: str) -> set[str]:
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in exposition.splitlines() if line and line[0] != "#"}


async def test_prometheus_endpoint_shows_the_series(
    make: Build, judge_server: JudgeServer, heavy_server: JudgeServer
) -> None:
    evaluator = make(local_retries=1)
    processor = EvalSpanProcessor(Pipeline(evaluator))  # kept alive: metrics hold it weakly
    server = serve_metrics(0, addr="127.0.0.1")
    try:
        metrics = enable_metrics(evaluator, processor=processor, meter_provider=server.meter_provider)
        results = await run_mix(evaluator, judge_server, heavy_server)
        await audit_one(evaluator, judge_server)
        metrics.record_alert("heavy_vector_share", "critical")
        sessions = SessionScorer(idle_s=60)  # one conversation of two turns, closed once idle
        sessions.add_observer(metrics.observe_session)
        for i, result in enumerate(results[:2]):
            await sessions.record(RAGSample(1, i + 1, "q", "a", [], session_id="chat-1"), result)
        assert len(await sessions.sweep(now=time.time() + 61)) == 1
        await sessions.aclose()
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url)
    finally:
        server.shutdown()
        server.shutdown()  # idempotent
    assert response.status_code == 200
    text = response.text
    names = series_names(text)
    for spec in SPECS:
        expected = prometheus_names()[spec.name]
        assert (expected + "_bucket" if spec.kind == "histogram" else expected) in names, (spec.name, sorted(names))
    assert re.search(r'ragtriage_eval_evaluations_total\{[^}]*tier="heavy"[^}]*\} 1\.0', text)
    assert re.search(r'ragtriage_eval_alerts_total\{[^}]*rule="heavy_vector_share"[^}]*\} 1\.0', text)
    assert re.search(r'ragtriage_eval_samples_dropped_total\{[^}]*reason="queue_full"[^}]*\} 0\.0', text)
    assert "# HELP ragtriage_eval_evaluations_total Sampled evaluations" in text
    assert re.search(r'ragtriage_eval_sessions_total\{[^}]*outcome="(clean|failed_turns)"[^}]*\} 1\.0', text)

    # The Grafana dashboard may only query series that this real scrape showed.
    dashboard = grafana_dashboard()
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"\bragtriage_[A-Za-z0-9_]+", expr)}
    assert queried, exprs
    assert queried <= names, sorted(queried - names)
    assert {m for m in prometheus_names().values()} <= {re.sub(r"_(bucket|sum|count)$", "", q) for q in queried}


def test_grafana_cli_draws_the_configured_heavy_share_limit(tmp_path) -> None:
    result = CliRunner().invoke(app, ["dashboards", "grafana"])
    assert result.exit_code == 0, result.output
    dashboard = json.loads(result.output)
    assert dashboard["title"] == "Eval Vector Distribution"
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles)) and len({p["id"] for p in dashboard["panels"]}) == len(titles)
    heavy = next(p for p in dashboard["panels"] if p["title"].startswith("Heavy-vector share"))
    assert heavy["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.30
    assert heavy["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"].startswith("line")
    tiers = next(p for p in dashboard["panels"] if p["title"].startswith("Tier mix"))
    assert tiers["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "percent"

    out = tmp_path / "dash.json"
    result = CliRunner().invoke(app, ["dashboards", "grafana", "--heavy-share-limit", "0.2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    heavy = next(p for p in json.loads(out.read_text())["panels"] if p["title"].startswith("Heavy-vector share"))
    assert heavy["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.2
    assert CliRunner().invoke(app, ["dashboards", "grafana", "--heavy-share-limit", "1.5"]).exit_code != 0
