"""Audit samples: a share of the cheaper tiers' decisions judged again by the tier above, against loopback judges."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import ragtriage
from ragtriage import CostTracker
from ragtriage.alerts import tier_agreement_rule
from ragtriage.dashboards import enable_metrics
from ragtriage.evaluator.audit import Agreement, AgreementWindow, AuditOutcome, audit_chosen
from ragtriage.evaluator.evaluator import MAX_AUDITS_IN_FLIGHT
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer

CONTEXTS = ["Paris is the capital and largest city of France.", "Lyon is a city in France."]
DOCS = [{"index": 1, "relevance": 1.0}, {"index": 2, "relevance": 0.2}]


def local_pass() -> Reply:
    return Reply(verdict_json(faithfulness=0.95, confidence=0.95, documents=DOCS))


def heavy_verdict(passes: bool) -> Reply:
    claims = [{"claim": "Paris is the capital", "supported": passes, "context_index": 1 if passes else None}]
    score = 0.95 if passes else 0.1
    return Reply(verdict_json(faithfulness=score, claims=claims, documents=DOCS), prompt_tokens=1000)


def disagreeing(rate: float, seed: int) -> Any:
    """A heavy judge that fails an answer the local judge passed with probability ``rate``."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def answer(body: dict[str, Any]) -> Reply:
        with lock:
            fails = rng.random() < rate
        return heavy_verdict(passes=not fails)

    return answer


async def test_agreement_interval_holds_the_known_rate(make, judge_server: JudgeServer, heavy_server: JudgeServer):
    """The issue's goal: 10% audits of 1,000 samples at a known 80% agreement; the interval holds 80%."""
    judge_server.default = local_pass()
    heavy_server.default = disagreeing(0.2, seed=26)
    evaluator = make(audit_rate=0.1)
    reader = InMemoryMetricReader()
    enable_metrics(evaluator, meter_provider=MeterProvider(metric_readers=[reader]))
    results = []
    for i in range(1000):
        question = f"What is the capital of France? (#{i})"
        results.append(await evaluator.evaluate(question, "Paris is the capital of France.", CONTEXTS))
    await evaluator.drain_audits()

    assert {(r.tier, r.verdict) for r in results} == {("local", "pass")}  # audits changed no verdict
    local = evaluator.audits.agreement("local")
    assert 70 <= local.audits <= 130  # 10% of 1,000, within binomial noise (mean 100, sd 9.5)
    assert len(heavy_server.requests) == local.audits  # the heavy judge was called for audits only
    low, high = local.agreement_interval
    assert low <= 0.8 <= high, (local.agreement, low, high)
    assert high - low < 0.2  # an interval that says something, not (0, 1)
    assert local.fails == 0 and local.fail_precision is None  # the local judge failed nothing
    spend = evaluator.cost_tracker.totals()["audit"]
    assert spend.calls == local.audits and spend.usd > 0  # audits count in cost
    assert evaluator.audits.counts["audits_ok"] == local.audits
    summary = evaluator.summary()["audits"]["local"]
    assert summary["audits"] == local.audits and summary["agreement_interval"] == local.agreement_interval
    # the OTel metric says the same: its interval holds the known 80%
    data = reader.get_metrics_data()
    assert data is not None
    gauge = {
        point.attributes["bound"]: point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "ragtriage.eval.tier_agreement"
        for point in metric.data.data_points
        if point.attributes["tier"] == "local" and point.attributes["stat"] == "agreement"
    }
    assert gauge["low"] <= 0.8 <= gauge["high"] and gauge["value"] == local.agreement


async def test_the_audit_runs_after_the_result_is_returned(make, judge_server, heavy_server) -> None:
    judge_server.default = local_pass()
    release = threading.Event()
    heavy_server.default = Reply(heavy_verdict(passes=False).content, block=release)
    evaluator = make(audit_rate=1.0)
    seen: list[AuditOutcome] = []

    async def on_audit(outcome: AuditOutcome) -> None:
        seen.append(outcome)

    result = await evaluator.evaluate("Capital?", "Paris is the capital of France.", CONTEXTS, on_audit=on_audit)
    assert (result.tier, result.verdict) == ("local", "pass")  # given while the auditor is still blocked
    assert seen == []
    release.set()
    await evaluator.drain_audits()
    assert [(o.tier, o.verdict, o.auditor, o.audit_verdict, o.agrees) for o in seen] == [
        ("local", "pass", "heavy", "fail", False)
    ]
    assert evaluator.last_result is result and result.verdict == "pass"


async def test_a_free_tier_fail_is_audited_by_the_local_judge_without_a_heavy_one(make, judge_server) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.1, confidence=0.95, documents=DOCS))
    evaluator = make(heavy=False, audit_rate=1.0)
    result = await evaluator.evaluate("Capital?", "", CONTEXTS)  # an empty answer: a certain free-tier fail
    assert (result.tier, result.verdict) == ("deterministic", "fail")
    await evaluator.drain_audits()
    free = evaluator.audits.agreement("deterministic")
    assert (free.audits, free.agreed, free.fails, free.fails_confirmed) == (1, 1, 1, 1)
    assert len(judge_server.requests) == 1


async def test_no_auditor_no_audit(make, judge_server, heavy_server) -> None:
    """A local decision has no tier above it without a heavy judge; the cache's copies are never audited."""
    judge_server.default = local_pass()
    evaluator = make(heavy=False, audit_rate=1.0)
    await evaluator.evaluate("Capital?", "Paris is the capital of France.", CONTEXTS)
    await evaluator.drain_audits()
    assert evaluator.audits.agreement("local").audits == 0 and len(judge_server.requests) == 1
    assert make(local=False, heavy=False, audit_rate=1.0).auditor is None


async def test_the_budget_stops_audits_before_the_heavy_tier(make, judge_server, heavy_server) -> None:
    judge_server.default = local_pass()
    heavy_server.default = heavy_verdict(passes=True)
    tracker = CostTracker(budget_usd_per_hour=1.0)
    tracker.record("heavy", usd=0.85)  # 85% spent: past the audits' share (80%), short of the whole budget
    evaluator = make(audit_rate=1.0, cost_tracker=tracker)
    await evaluator.evaluate("Capital?", "Paris is the capital of France.", CONTEXTS)
    await evaluator.drain_audits()
    assert evaluator.audits.counts == {"audits_budget_exhausted": 1}
    assert heavy_server.requests == []
    # ... while the cascade's own heavy calls still run
    judge_server.push(Reply(verdict_json(faithfulness=0.9, confidence=0.3, documents=DOCS)))
    result = await evaluator.evaluate("Capital, unsure?", "Paris is the capital of France.", CONTEXTS)
    assert result.tier == "heavy" and len(heavy_server.requests) == 1


async def test_audits_beyond_the_bound_are_dropped_and_counted(make, judge_server, heavy_server) -> None:
    judge_server.default = local_pass()
    release = threading.Event()
    heavy_server.default = Reply(heavy_verdict(passes=True).content, block=release)
    evaluator = make(audit_rate=1.0)
    for i in range(MAX_AUDITS_IN_FLIGHT + 2):
        await evaluator.evaluate(f"Capital #{i}?", "Paris is the capital of France.", CONTEXTS)
    assert evaluator.audits.counts["audits_dropped_busy"] == 2  # never more than the bound running or waiting
    release.set()
    await evaluator.drain_audits()
    assert evaluator.audits.agreement("local").audits == MAX_AUDITS_IN_FLIGHT


def test_audit_choice_is_deterministic_and_independent_of_the_trace_sampling() -> None:
    keys = [f"{random.Random(i).getrandbits(128):032x}" for i in range(4000)]
    chosen = [k for k in keys if audit_chosen(k, 0.1)]
    assert 320 <= len(chosen) <= 480
    assert chosen == [k for k in keys if audit_chosen(k, 0.1)]
    assert not any(audit_chosen(k, 0.0) for k in keys) and all(audit_chosen(k, 1.0) for k in keys)


def test_the_agreement_rule_fires_only_when_the_whole_interval_is_low() -> None:
    readings: dict[str, Agreement] = {}
    rule = tier_agreement_rule(lambda: readings, threshold=0.85, min_samples=30)
    readings["local"] = Agreement("local", audits=20, agreed=10, fails=0, fails_confirmed=0, undecided=0)
    assert rule.check([], []) is None  # too few audits to say anything
    readings["local"] = Agreement("local", audits=40, agreed=32, fails=0, fails_confirmed=0, undecided=0)
    check = rule.check([], [])
    assert check is not None and not check.breached  # 80%, but the interval reaches above 85%
    readings["local"] = Agreement("local", audits=400, agreed=280, fails=0, fails_confirmed=0, undecided=0)
    check = rule.check([], [])
    assert check is not None and check.breached and check.value == pytest.approx(0.7)
    assert "local tier" in check.detail


def test_the_window_forgets_old_audits() -> None:
    window = AgreementWindow(size=3)
    for verdict in ("pass", "fail", "fail", "fail"):
        window.add(AuditOutcome("k", "local", "pass", "heavy", verdict))  # type: ignore[arg-type]
    assert window.agreement("local").audits == 3 and window.agreement("local").agreed == 0
    with pytest.raises(ValueError, match="size"):
        AgreementWindow(size=0)


def test_a_bad_audit_rate_is_refused(make) -> None:
    with pytest.raises(ValueError, match="audit_rate"):
        make(audit_rate=1.5)
    with pytest.raises(ValueError, match="audit_rate"):
        ragtriage.Config(audit_rate=2.0)


@pytest.mark.phoenix
def test_an_audited_trace_carries_audit_verdict_in_phoenix(
    phoenix: PhoenixServer, judge_server: JudgeServer, heavy_server: JudgeServer
) -> None:
    from tests.test_phoenix import annotations, app_provider, rag_request

    project = f"audit-{uuid.uuid4().hex[:8]}"
    judge_server.default = local_pass()
    heavy_server.default = heavy_verdict(passes=False)
    provider: TracerProvider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, local_judge_url=judge_server.url,
        heavy_judge_url=heavy_server.url, audit_rate=1.0, auto_instrument=False,
    )  # fmt: skip
    try:
        _, root_id, _ = rag_request(provider)
        assert provider.force_flush(30_000)
        deadline = time.monotonic() + 30
        found: dict[str, dict] = {}
        while "audit_verdict" not in found and time.monotonic() < deadline:
            found = annotations(phoenix, project, root_id)
            time.sleep(0.1)
        assert found["answer"]["result"]["label"] == "pass"  # the verdict given stands
        audit = found["audit_verdict"]
        assert audit["result"]["label"] == "fail" and audit["annotator_kind"] == "LLM"
        assert audit["metadata"]["audited_tier"] == "local" and audit["metadata"]["agrees"] is False
        configs = httpx.get(f"{phoenix.url}/v1/projects/{project}/annotation_configs").json()["data"]
        names = {c["name"] for c in configs}
        assert {"audit_verdict", "human_verdict"} <= names
    finally:
        ragtriage.uninstrument()


def test_budget_guard_reads_the_audit_share() -> None:
    tracker = CostTracker(budget_usd_per_hour=1.0)
    assert tracker.admits_audit()
    tracker.record("audit", usd=0.79)
    assert tracker.admits_audit()
    tracker.record("audit", usd=0.02)
    assert not tracker.admits_audit() and not tracker.exhausted()
    assert CostTracker().admits_audit()


async def test_aclose_lets_running_audits_finish(make, judge_server, heavy_server) -> None:
    judge_server.default = local_pass()
    heavy_server.default = Reply(heavy_verdict(passes=True).content, delay_s=0.2)
    evaluator = make(audit_rate=1.0)
    await evaluator.evaluate("Capital?", "Paris is the capital of France.", CONTEXTS)
    await asyncio.wait_for(evaluator.aclose(), 15)
    assert evaluator.audits.agreement("local").audits == 1


@pytest.mark.parametrize(
    ("settings", "role", "expected"),
    [
        ({"local_judge_url": "http://127.0.0.1:9/v1"}, "worker", True),  # local audits the free tiers' fails
        ({"local_judge_url": "http://127.0.0.1:9/v1", "audit_rate": 0.0}, "worker", False),
        ({}, "worker", False),  # free tiers only: no tier to audit with
        ({"local_judge_url": "http://127.0.0.1:9/v1"}, "offline", False),  # ci and calibrate judge everything
    ],
)
async def test_tier_agreement_low_is_on_wherever_a_tier_audits(settings: dict, role: str, expected: bool) -> None:
    from ragtriage.runtime import build

    runtime = build(ragtriage.Config(write_back=False, **settings), role)  # type: ignore[arg-type]
    try:
        assert runtime.alerts is not None and runtime.evaluator is not None
        assert any(r.name == "tier_agreement_low" for r in runtime.alerts.rules) is expected
        assert (runtime.evaluator.auditor is not None) is expected
    finally:
        await runtime.aclose()


async def test_the_always_on_rules_join_rules_given_in_code_once() -> None:
    """Dropped samples, failed sessions and tier agreement are watched wherever they exist, also beside rules given
    in code; a given rule of the same name is not doubled."""
    from ragtriage.alerts.rules import MetricRule
    from ragtriage.runtime import build

    mine = MetricRule(name="faithfulness_low", metric="faithfulness", threshold=0.5)
    theirs = tier_agreement_rule(AgreementWindow().snapshot, threshold=0.5)
    config = ragtriage.Config(write_back=False, local_judge_url="http://127.0.0.1:9/v1")
    for given, expected in [
        ([mine], ["faithfulness_low", "failed_sessions_high", "tier_agreement_low"]),
        ([mine, theirs], ["faithfulness_low", "tier_agreement_low", "failed_sessions_high"]),
    ]:
        runtime = build(config, "worker", alert_rules=given)
        try:
            assert runtime.alerts is not None and [r.name for r in runtime.alerts.rules] == expected
        finally:
            await runtime.aclose()


def test_the_rules_file_tunes_tier_agreement_low() -> None:
    from ragtriage.alerts import load_rules

    spec = {"rule": [{"type": "tier_agreement", "threshold": 0.9, "min_samples": 50}]}
    window = AgreementWindow()
    (rule,) = load_rules(spec, agreement=window.snapshot)
    assert (rule.name, rule.threshold, rule.min_samples) == ("tier_agreement_low", 0.9, 50)  # type: ignore[attr-defined]
    assert load_rules(spec) == []  # nothing audits here: skipped with a warning, never an error
