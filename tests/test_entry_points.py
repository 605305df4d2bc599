"""Every entry point runs the same pipeline from the same settings.

One rules file (metric, heavy_share, budget and dropped rules), one calibration file, one budget and the sinks
of the environment (a loopback webhook), given to: instrument() on the thread, in the evaluator process, with
the queue and a real `ragtriage worker`; `ragtriage ci` and `ragtriage calibrate`. Each must start, apply them
all, and deliver its alerts; the offline ones deliver nothing unless asked (--send-alerts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from typer.testing import CliRunner

import ragtriage
from ragtriage.cli import app
from ragtriage.instrumentation import installed_processor
from ragtriage.testing import JudgeServer, Reply, verdict_json
from tests.receivers import Receiver
from tests.test_span_processor import rag_request
from tests.test_streams import fully_consumed, wait_until

RULES = """
[defaults]
min_samples = 2
window_size = 50

[[rule]]
type = "metric"
metric = "faithfulness"   # no threshold: the calibrated one applies

[[rule]]
type = "heavy_share"
limit = 0.3

[[rule]]
type = "budget"
limit = 0.5

[[rule]]
type = "dropped"
limit = 0.5
"""
#: The calibrated faithfulness threshold: 0.35, where the default is 0.7.
CALIBRATION = {
    "version": 1,
    "target_precision": 0.9,
    "recommended": {"thresholds": {"faithfulness": 0.35}, "confidence_threshold": 0.8},
    "tiers": {},
    "notes": [],
}
#: What each entry point must alert on: a heavy judge decides everything, scores 1/3, and costs money.
EXPECTED = {"faithfulness_low", "heavy_share_high", "budget_spent_high"}
#: Every variable that could point at a sink this test did not start.
FOREIGN = (
    "RAGTRIAGE_SLACK_WEBHOOK_URL",
    "RAGTRIAGE_PAGERDUTY_ROUTING_KEY",
    "RAGTRIAGE_SMTP_HOST",
    "RAGTRIAGE_ALERT_WEBHOOK_URL",
    "RAGTRIAGE_ALERT_RULES_FILE",
    "RAGTRIAGE_CALIBRATION_FILE",
    "RAGTRIAGE_QUEUE_URL",
    "RAGTRIAGE_EVALUATE_IN",
    "OPENAI_API_KEY",
)


@pytest.fixture
def settings(tmp_path: Path, judge_server: JudgeServer, heavy_server: JudgeServer) -> Iterator[dict[str, str]]:
    """The environment every entry point gets; the webhook receiver is in ``settings["_receiver"]``."""
    # The local judge is never sure, so the heavy judge decides every sample: faithfulness 1/3.
    judge_server.default = Reply(verdict_json(faithfulness=1 / 3, confidence=0.2))
    unsupported = {"claim": "c", "supported": False, "context_index": 1}
    claims = [{"claim": "a", "supported": True, "context_index": 1}, unsupported, unsupported]
    heavy_server.default = Reply(verdict_json(faithfulness=1 / 3, claims=claims, confidence=0.95))
    (tmp_path / "rules.toml").write_text(RULES)
    (tmp_path / "calibration.json").write_text(json.dumps(CALIBRATION))
    with Receiver() as webhook:
        env = {
            "RAGTRIAGE_ALERT_RULES_FILE": str(tmp_path / "rules.toml"),
            "RAGTRIAGE_CALIBRATION_FILE": str(tmp_path / "calibration.json"),
            "RAGTRIAGE_BUDGET_USD_PER_HOUR": "0.000001",
            "RAGTRIAGE_ALERT_WEBHOOK_URL": webhook.url,
            "RAGTRIAGE_LOCAL_JUDGE_URL": judge_server.url,
            "RAGTRIAGE_HEAVY_JUDGE_URL": heavy_server.url,
            "RAGTRIAGE_WRITE_BACK": "false",
        }
        saved = {name: os.environ.pop(name, None) for name in FOREIGN}
        os.environ.update(env)
        try:
            yield {**env, "_receiver": webhook}  # type: ignore[dict-item]
        finally:
            for name in env:
                os.environ.pop(name, None)
            os.environ.update({k: v for k, v in saved.items() if v is not None})


def fired(webhook: Receiver) -> dict[str, dict]:
    return {event["rule"]: event for event in webhook.received if event["state"] == "firing"}


def check_alerts(webhook: Receiver, faithfulness: tuple[float, float] = (1 / 3, 1 / 3)) -> None:
    """``faithfulness``: the range the window's mean may be in when the alert fires (the judges say 1/3)."""
    wait_until(lambda: set(fired(webhook)) >= EXPECTED, timeout_s=30, what=f"alerts {EXPECTED}")
    events = fired(webhook)
    assert events["faithfulness_low"]["threshold"] == 0.35  # the calibration file applied
    low, high = faithfulness
    assert low - 0.01 <= events["faithfulness_low"]["value"] <= high + 0.01
    assert events["heavy_share_high"]["value"] > 0.3


def send_traces(provider: TracerProvider, n: int = 2) -> None:
    """Results a second apart: the rules look at the window at most once a second."""
    for i in range(n):
        rag_request(provider, question=f"What is the capital of France? ({i})")
        processor = installed_processor()
        assert processor is not None and processor.force_flush(30_000)
        time.sleep(1.1)


@pytest.mark.parametrize("evaluate_in", ["thread", "process"])
def test_instrument_applies_every_setting_and_alerts(settings: dict, evaluate_in: str) -> None:
    provider = TracerProvider()
    ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, auto_instrument=False, evaluate_in=evaluate_in)
    try:
        send_traces(provider, 3)
        check_alerts(settings["_receiver"])
    finally:
        ragtriage.uninstrument()
        provider.shutdown()


@pytest.mark.redis
def test_the_queue_and_a_worker_started_with_a_rules_file_apply_every_setting_and_alert(
    settings: dict, redis_server, tmp_path: Path
) -> None:
    """The worker used to exit at start-up with a rules file ("alert_rules need alert_sinks")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("_")}
    log = (tmp_path / "worker.log").open("wb")
    command = [sys.executable, "-m", "ragtriage.cli", "worker", "--queue", redis_server.url, "--claim-idle-s", "1"]
    worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    provider = TracerProvider()
    ragtriage.instrument(
        tracer_provider=provider,
        sample_rate=1.0,
        auto_instrument=False,
        evaluate_in="queue",
        queue_url=redis_server.url,
    )
    try:
        client = redis.Redis.from_url(redis_server.url)
        for _ in range(3):
            send_traces(provider, 1)
            wait_until(lambda: fully_consumed(client), timeout_s=30, what="the worker to consume the stream")
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        check_alerts(settings["_receiver"])
    finally:
        ragtriage.uninstrument()
        provider.shutdown()
        worker.terminate()
        worker.wait(30)
    output = (tmp_path / "worker.log").read_text()
    assert "(dropped) skipped" in output  # a worker drops no samples: the apps' rule, said once


def dataset(tmp_path: Path) -> Path:
    rows = [
        {"id": f"i{i}", "question": f"What is the capital of France? ({i})", "contexts": ["Paris is the capital."],
         "answer": "Paris.", "label": "faithful" if i % 2 else "hallucinated", "category": "geo"}
        for i in range(6)
    ]  # fmt: skip
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("send", [False, True])
def test_ragtriage_ci_reports_its_alerts_and_sends_them_only_when_asked(
    settings: dict, tmp_path: Path, send: bool
) -> None:
    report = tmp_path / "report.json"
    args = ["ci", "--dataset", str(dataset(tmp_path)), "--n", "6", "--json", str(report)]
    result = CliRunner().invoke(app, [*args, *(["--send-alerts"] if send else [])])
    assert result.exit_code in (0, 1), result.output
    notes = " ".join(json.loads(report.read_text())["notes"])
    for rule in EXPECTED:
        assert f": {rule}:" in notes  # what fired is in the report either way
    webhook = settings["_receiver"]
    if send:
        # the synthetic hallucination the free tiers catch has no faithfulness to average (they only ever fail):
        # the window's mean is the judged answers' 1/3, not pulled toward 0 by the fails alone
        items = json.loads(report.read_text())["items"]
        assert sorted(item["faithfulness"] is None for item in items) == [False] * 5 + [True]
        check_alerts(webhook)
    else:
        time.sleep(0.5)
        assert webhook.received == []  # an offline run never pages anyone unasked
        assert "not sent (--send-alerts sends it)" in notes


@pytest.mark.parametrize("send", [False, True])
def test_ragtriage_calibrate_sends_nothing_unless_asked(settings: dict, tmp_path: Path, send: bool) -> None:
    args = ["calibrate", "--labels", str(dataset(tmp_path)), "-o", str(tmp_path / "out.json")]
    result = CliRunner().invoke(app, [*args, *(["--send-alerts"] if send else [])])
    assert result.exit_code == 0, result.output
    assert "budget_spent_high" in result.output  # its judge calls are spent against the budget
    webhook = settings["_receiver"]
    if send:
        wait_until(lambda: "budget_spent_high" in fired(webhook), timeout_s=30, what="the budget alert")
    else:
        time.sleep(0.5)
        assert webhook.received == []
