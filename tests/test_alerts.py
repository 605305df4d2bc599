"""Alert rules, lifecycle and sinks, with loopback Slack/PagerDuty receivers and a real SMTP server."""

from __future__ import annotations

import asyncio
import logging

import pytest
from typer.testing import CliRunner

from ragtriage import LLMJudge, RAGEvaluationResult, RAGEvaluator
from ragtriage.alerts import (
    AlertManager,
    EmailSink,
    LoggingAlertSink,
    MetricRule,
    PagerDutySink,
    RulesFileError,
    ShareRule,
    SlackSink,
    TierDriftRule,
    WebhookSink,
    default_rules,
    load_rules,
    sinks_from_config,
)
from ragtriage.alerts.cli import example_event
from ragtriage.alerts.rules import js_distance, population_stability
from ragtriage.cli import app
from ragtriage.config import Config
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.redis_server import free_port
from tests.receivers import ListSink, Receiver, check_pagerduty_event, check_slack_payload


def result(*, faithfulness: float | None = 0.9, tier: str = "local", verdict: str = "pass", status: str = "ok"):
    return RAGEvaluationResult(
        sampled=True,
        sample_key=None,
        question="q",
        faithfulness=faithfulness,
        tier=tier,
        verdict=verdict,
        status=status,
    )  # type: ignore[arg-type]


def faithfulness_rule(**kwargs) -> MetricRule:
    settings = {"window_size": 10, "min_samples": 5, "cooldown_s": 3600.0} | kwargs
    return MetricRule(name="faithfulness_low", metric="faithfulness", threshold=0.7, **settings)


async def feed(manager: AlertManager, results) -> None:
    """One result at a time, as evaluations arrive: each turn runs before the next result."""
    for r in results:
        manager.observe(r)
        await asyncio.sleep(0)
    await manager.flush()


async def test_fire_once_then_quiet_during_cooldown_then_resolve() -> None:
    sink = ListSink()
    manager = AlertManager([faithfulness_rule()], [sink], project="shop", evaluate_every_s=0)
    await feed(manager, [result(faithfulness=0.1)] * 4)  # under min_samples: nothing decided yet
    assert sink.events == []
    await feed(manager, [result(faithfulness=0.2)] * 8)
    assert [(e.state, e.rule) for e in sink.events] == [("firing", "faithfulness_low")]
    fired = sink.events[0]
    assert fired.severity == "critical" and fired.value < 0.35  # below half the threshold
    assert fired.dedupe_key == "ragtriage:shop:faithfulness_low"
    assert manager.counts["suppressed_by_cooldown"] > 0
    await feed(manager, [result(faithfulness=0.95)] * 10)
    assert [e.state for e in sink.events] == ["firing", "resolved"]


async def test_a_still_holding_rule_renotifies_after_its_cooldown_and_on_escalation() -> None:
    sink = ListSink()
    manager = AlertManager([faithfulness_rule(cooldown_s=0.0)], [sink], evaluate_every_s=0)
    await feed(manager, [result(faithfulness=0.5)] * 5)
    assert [e.severity for e in sink.events] == ["warning"] * 1 and len(sink.events) == 1
    await feed(manager, [result(faithfulness=0.5)])
    assert len(sink.events) == 2  # cooldown 0: reminder
    escalating = AlertManager([faithfulness_rule()], [ListSink()], evaluate_every_s=0)
    await feed(escalating, [result(faithfulness=0.6)] * 5 + [result(faithfulness=0.0)] * 10)
    severities = [e.severity for e in escalating.sinks[0].events]  # type: ignore[attr-defined]
    assert severities == ["warning", "critical"]


async def test_quantile_rule() -> None:
    rule = faithfulness_rule(quantile=0.1, min_samples=10)
    check = rule.check([_obs(v) for v in [0.9] * 9 + [0.1]], [])
    assert check is not None and check.value == pytest.approx(0.82) and not check.breached


def _obs(value: float):
    from ragtriage.alerts.rules import Observation

    return Observation.of(result(faithfulness=value), 0.0)


def test_severity_is_mirrored_for_above_limit_rules() -> None:
    rule = ShareRule(name="x", what="x", limit=0.3, predicate=lambda o: True)
    assert rule.severity(0.42, 0.3) == "warning"
    assert rule.severity(0.46, 0.3) == "critical"
    assert faithfulness_rule().severity(0.35, 0.7) == "warning"
    assert faithfulness_rule().severity(0.34, 0.7) == "critical"


async def test_heavy_share_over_30_percent_fires_to_slack_and_resolves(
    judge_server: JudgeServer, heavy_server: JudgeServer
) -> None:
    """End to end: the evaluator leans on the heavy judge, Slack hears about it once, then the resolve."""
    confident = Reply(verdict_json(confidence=0.95))
    unsure = Reply(verdict_json(confidence=0.2))
    heavy_server.default = Reply(
        verdict_json(claims=[{"claim": "c", "supported": True, "context_index": 1}], confidence=0.95)
    )
    with Receiver() as slack:
        rules = default_rules(window_size=20, min_samples=10, cooldown_s=3600)
        evaluator = RAGEvaluator(
            sample_rate=1.0,
            cache=False,
            local_judge=LLMJudge(model="llama", base_url=judge_server.url),
            heavy_judge=LLMJudge(model="gpt-4o-mini", base_url=heavy_server.url),
        )
        alerts = AlertManager(
            [r for r in rules if r.name == "heavy_share_high"],
            [SlackSink(slack.url)],
            project="shop",
            phoenix_url="http://127.0.0.1:6006/projects/shop",
            evaluate_every_s=0,  # judge the window after every result
        )
        evaluator.add_observer(alerts.observe)
        for i in range(20):
            judge_server.push(unsure if i % 2 else confident)  # 50% escalate
            await evaluator.evaluate("What is the capital of France?", "Paris.", ["Paris is the capital of France."])
        await alerts.flush()
        assert len(slack.received) == 1
        fired = slack.received[0]
        check_slack_payload(fired)
        text = str(fired)
        assert "heavy_share_high" in text and "50% > 30%" in text and "lower confidence_threshold" in text
        assert "http://127.0.0.1:6006/projects/shop" in text
        judge_server.default = confident
        for _ in range(20):
            await evaluator.evaluate("What is the capital of France?", "Paris.", ["Paris is the capital of France."])
        await alerts.aclose()
        await evaluator.aclose()
        assert len(slack.received) == 2 and "resolved" in slack.received[1]["text"]
        check_slack_payload(slack.received[1])


async def test_free_tier_fails_raise_the_fail_share_never_a_score_alert() -> None:
    """Without a judge the free tiers only ever fail: their implied faithfulness 0 would make every window's mean
    0.00 and fire faithfulness_low on the failures alone. The fail share is the real signal."""
    sink = ListSink()
    evaluator = RAGEvaluator(sample_rate=1.0, cache=False)  # the embedded default
    alerts = AlertManager(default_rules(window_size=40, min_samples=10), [sink], evaluate_every_s=0)
    evaluator.add_observer(alerts.observe)
    contexts = ["Paris is the capital of France."]
    for year in range(1780, 1800):  # 20 years no context states: certain fails, each implying faithfulness 0
        await evaluator.evaluate(
            "Since when is Paris the capital?", f"Paris has been the capital since {year}.", contexts
        )
    for _ in range(10):
        await evaluator.evaluate("What is the capital of France?", "Paris is the capital of France.", contexts)
    await alerts.aclose()
    await evaluator.aclose()
    assert evaluator.summary()["by_verdict"] == {"fail": 20, "uncertain": 10}
    assert evaluator.summary()["mean_faithfulness"] is None  # no judge measured any
    assert {e.rule for e in sink.events if e.state == "firing"} == {"fail_share_high"}


async def test_drifted_tier_mix_fires_against_its_baseline() -> None:
    sink = ListSink()
    rule = TierDriftRule(name="drift", window_size=20, min_samples=10, js_limit=0.2)
    manager = AlertManager([rule], [sink], evaluate_every_s=0)
    mix = ["local"] * 7 + ["deterministic"] * 2 + ["heavy"]
    await feed(manager, [result(tier=t) for t in mix * 4])  # a stable mix: no alert
    assert sink.events == []
    await feed(manager, [result(tier="heavy", faithfulness=0.3) for _ in range(20)])
    assert sink.events and {e.state for e in sink.events} == {"firing"}
    assert len(sink.events) <= 2  # fired, at most escalated once: no flood
    assert "JS distance" in sink.events[0].metric and sink.events[-1].severity == "critical"


def test_drift_statistics() -> None:
    assert js_distance([1, 0, 0, 0], [1, 0, 0, 0]) == 0
    assert js_distance([1, 0, 0, 0], [0, 0, 0, 1]) == pytest.approx(1.0)
    assert population_stability([0.9] * 50, [0.9] * 50) == pytest.approx(0.0)
    assert population_stability([0.9] * 50, [0.2] * 50) > 1


async def test_pagerduty_trigger_and_resolve_share_a_dedup_key() -> None:
    with Receiver(status=202, body='{"status":"success","message":"Event processed"}') as pagerduty:
        sink = PagerDutySink("R0UTINGKEY", url=pagerduty.url)
        manager = AlertManager([faithfulness_rule()], [sink], project="shop", evaluate_every_s=0)
        await feed(manager, [result(faithfulness=0.1)] * 5 + [result(faithfulness=1.0)] * 10)
    trigger, resolve = pagerduty.received
    for event in (trigger, resolve):
        check_pagerduty_event(event)
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == "ragtriage:shop:faithfulness_low"
    assert trigger["routing_key"] == "R0UTINGKEY" and trigger["payload"]["severity"] == "critical"


async def test_email_reaches_a_real_smtp_server() -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received = []

    class Collect(Message):
        def handle_message(self, message) -> None:
            received.append(message)

    port = free_port()
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sink = EmailSink(host="127.0.0.1", port=port, sender="ragtriage@example.com",
                         recipients=["oncall@example.com"], starttls=False)  # fmt: skip
        manager = AlertManager([], [sink])
        assert await manager.deliver(sink, example_event("shop"))
    finally:
        controller.stop()
    [message] = received
    assert message["To"] == "oncall@example.com" and "[TEST] ragtriage WARNING" in message["Subject"]
    assert "Recommendation: Nothing to do" in message.get_payload()


async def test_generic_webhook_gets_the_event_as_json() -> None:
    with Receiver() as hook:
        assert await AlertManager([], []).deliver(WebhookSink(hook.url), example_event("shop"))
    [body] = hook.received
    assert body["source"] == "ragtriage" and body["rule"] == "test_alert" and body["value"] == 0.42


async def test_failing_receiver_is_retried_within_bounds_and_counted(caplog) -> None:
    with Receiver(status=500, body="boom") as slack:
        sink = SlackSink(slack.url)
        manager = AlertManager([], [sink], max_retries=2)
        with caplog.at_level(logging.WARNING):
            ok = await manager.deliver(sink, example_event("shop"))
    assert not ok and len(slack.received) == 3
    assert manager.counts["failed_slack"] == 1 and manager.counts["retries_slack"] == 2
    assert slack.url not in caplog.text and "HTTP 500" in caplog.text  # the webhook URL is a secret


async def test_a_hanging_receiver_does_not_delay_evaluations_or_other_sinks(judge_server: JudgeServer) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.1, confidence=0.95))
    good = ListSink()
    with Receiver() as slow:
        slow.hang.set()
        evaluator = RAGEvaluator(
            sample_rate=1.0, cache=False, local_judge=LLMJudge(model="m", base_url=judge_server.url)
        )
        alerts = AlertManager(
            [faithfulness_rule(min_samples=2)], [SlackSink(slow.url, timeout_s=30), good], evaluate_every_s=0
        )
        evaluator.add_observer(alerts.observe)
        for _ in range(6):
            r = await evaluator.evaluate("Capital of France?", "Paris.", ["Paris is the capital of France."])
            assert r.verdict == "fail"
        await asyncio.sleep(0.2)
        # all six evaluations finished and the other sink got the alert while Slack still hangs
        assert len(slow.received) == 1 and len(good.events) == 1
        slow.release.set()
        await alerts.aclose()
        await evaluator.aclose()
    assert alerts.counts["sent_slack"] == 1


def test_secrets_stay_out_of_repr() -> None:
    secret = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert "XXXXSECRET" not in repr(SlackSink(secret))
    assert "R0UTING" not in repr(PagerDutySink("R0UTINGKEY"))
    assert "hunter2" not in repr(
        EmailSink(host="h", sender="a@b.c", recipients=["d@e.f"], username="u", password="hunter2")
    )
    with pytest.raises(ValueError, match="webhook_url") as info:
        SlackSink("hooks.slack.com/services/SECRET")
    assert "SECRET" not in str(info.value)


def test_rules_file(tmp_path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        """
[defaults]
window_size = 50
window_minutes = 10
min_samples = 5
cooldown_minutes = 60

[[rule]]
type = "heavy_share"
limit = 0.25

[[rule]]
type = "metric"
metric = "faithfulness"
quantile = 0.1

[[rule]]
type = "drift"
js_limit = 0.3
"""
    )
    heavy, metric, drift = load_rules(path)
    assert (heavy.name, heavy.limit, heavy.window_size, heavy.window_s, heavy.cooldown_s) == (
        "heavy_share_high", 0.25, 50, 600, 3600,
    )  # type: ignore[attr-defined]  # fmt: skip
    assert (metric.threshold, metric.quantile, metric.min_samples) == (0.7, 0.1, 5)  # type: ignore[attr-defined]
    assert drift.js_limit == 0.3  # type: ignore[attr-defined]
    assert [r.name for r in load_rules({"defaults": {"min_samples": 3}})] == [r.name for r in default_rules()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\ntype = "metric"\nmetric = "vibes"\n', r"rule\[0\].*metric must be one of"),
        ('[[rule]]\ntype = "heavy_share"\nlimt = 0.3\n', r"rule\[0\]: unknown key\(s\) limt"),
        ('[[rule]]\ntype = "nope"\n', r"rule\[0\]: type must be one of"),
        ('[[rule]]\ntype = "budget"\n', r"rule\[0\]: a budget rule needs"),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_bad_rules_files_name_the_problem(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesFileError, match=message):
        load_rules(path)


def test_sinks_from_the_environment(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for name, value in {
        "RAGTRIAGE_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/x",
        "RAGTRIAGE_PAGERDUTY_ROUTING_KEY": "key",
        "RAGTRIAGE_SMTP_HOST": "smtp.example.com",
        "RAGTRIAGE_SMTP_PORT": "not-a-port",
        "RAGTRIAGE_SMTP_FROM": "a@example.com",
        "RAGTRIAGE_SMTP_TO": "b@example.com, c@example.com",
        "RAGTRIAGE_ALERT_WEBHOOK_URL": "https://example.com/hook",
    }.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING):
        config = Config.from_env()
    sinks = sinks_from_config(config)
    assert [type(s) for s in sinks] == [LoggingAlertSink, SlackSink, PagerDutySink, EmailSink, WebhookSink]
    # a bad port is a warning and the default, as for every other variable
    assert config.smtp_port == 587 and "RAGTRIAGE_SMTP_PORT" in caplog.text


def test_alerts_test_command_reports_each_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    with Receiver() as slack, Receiver(status=500) as pagerduty:
        monkeypatch.setenv("RAGTRIAGE_SLACK_WEBHOOK_URL", slack.url)
        monkeypatch.setenv("RAGTRIAGE_PAGERDUTY_ROUTING_KEY", "key")
        monkeypatch.setenv("RAGTRIAGE_PAGERDUTY_URL", pagerduty.url)
        outcome = CliRunner().invoke(app, ["alerts", "test", "--project", "shop"])
    assert outcome.exit_code == 1
    lines = {line.split()[0]: line.split()[1] for line in outcome.output.splitlines() if line.strip()[:1].isalpha()}
    assert lines["slack"] == "ok" and lines["pagerduty"] == "FAILED" and lines["log"] == "ok"
    check_slack_payload(slack.received[0])
    check_pagerduty_event(pagerduty.received[0])


def test_alert_manager_arguments() -> None:
    with pytest.raises(TypeError, match=r"sinks\[0\]"):
        AlertManager([], [print])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"rules\[0\]"):
        AlertManager(["not a rule"], [])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="state"):
        AlertManager([], [], state=object())  # type: ignore[arg-type]


async def test_dropped_sample_rate_over_the_window_fires() -> None:
    from ragtriage.alerts import dropped_samples_rule

    counters = {"dropped": 0, "offered": 0}
    rule = dropped_samples_rule(lambda: (counters["dropped"], counters["offered"]), limit=0.05, min_samples=10)
    sink = ListSink()
    manager = AlertManager([rule], [sink], evaluate_every_s=0)
    await manager.tick()  # first snapshot
    counters.update(dropped=1, offered=100)
    assert await manager.tick() == []  # 1% dropped
    counters.update(dropped=31, offered=200)
    [event] = await manager.tick()  # 31 of 200 offered within the window
    assert event.state == "firing" and event.value == pytest.approx(31 / 200, abs=1e-4)
