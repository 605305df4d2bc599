"""The audit agreement window of a worker fleet, shared in a real redis-server: every worker reads every audit."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

import ragtriage
from ragtriage.alerts import AlertManager, RedisAlertState, tier_agreement_rule
from ragtriage.evaluator.audit import AgreementWindow, AuditOutcome
from ragtriage.evaluator.fleet_audits import RedisAgreementWindow
from ragtriage.handoff.redis_stream import StreamPublisher
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.redis_server import RedisServer
from ragtriage.testing.tls import self_signed_certificate
from tests.receivers import ListSink, Receiver
from tests.test_audit import CONTEXTS, heavy_verdict, local_pass
from tests.test_streams import fully_consumed, sample, wait_until

pytestmark = pytest.mark.redis
ANSWER = "Paris is the capital of France."


def outcome(tier: str = "local", verdict: str = "pass", audit: str | None = "pass") -> AuditOutcome:
    return AuditOutcome("k", tier, verdict, "heavy", audit)  # type: ignore[arg-type]


def local_only(window: AgreementWindow) -> AgreementWindow:
    """The process's own window inside a shared one, read as an in-memory window would be."""
    own = AgreementWindow(size=window.size, window_s=window.window_s)
    for tier in ("deterministic", "local"):
        for o in window.outcomes(tier):
            own.add(o)
    return own


async def test_two_evaluators_sharing_redis_each_read_both_ones_audits(make, judge_server, heavy_server, redis_server):
    judge_server.default = local_pass()
    heavy_server.default = heavy_verdict(passes=False)  # the auditor fails what the local judge passed
    project = f"fleet-{uuid.uuid4().hex[:6]}"
    evaluators = [
        make(audit_rate=1.0, audits=RedisAgreementWindow(redis_server.url, project=project)) for _ in range(2)
    ]
    for i in range(12):
        await evaluators[i % 2].evaluate(f"What is the capital of France? (#{i})", ANSWER, CONTEXTS)
    for evaluator in evaluators:
        await evaluator.drain_audits()
    for evaluator in evaluators:
        await evaluator.audits.refresh()  # type: ignore[attr-defined]
        local = evaluator.audits.snapshot()["local"]
        assert (local.audits, local.agreed) == (12, 0)  # both evaluators' audits
        assert evaluator.audits.agreement("local") == local
        assert evaluator.summary()["audits"]["local"]["audits"] == 12
        assert len(evaluator.audits.outcomes("local")) == 6  # its own
        assert evaluator.audits.counts["audits_ok"] == 6 and not evaluator.audits.counts["shared_window_errors"]
    other = RedisAgreementWindow(redis_server.url, project="another-project")
    await other.refresh()
    assert other.snapshot()["local"].audits == 0  # one window per project
    await other.aclose()


async def test_tier_agreement_low_fires_once_from_the_fleet_when_no_worker_alone_has_enough(
    make, judge_server, heavy_server, redis_server
):
    """Each of two workers runs 20 audits, under min_samples (30); the fleet's 40 fire the alert, once."""
    judge_server.default = local_pass()
    heavy_server.default = heavy_verdict(passes=False)
    project = f"fleet-{uuid.uuid4().hex[:6]}"
    sinks = [ListSink(), ListSink()]
    workers = []
    for sink in sinks:  # what runtime.build gives each `ragtriage worker`: shared audits, shared alert state
        evaluator = make(audit_rate=1.0, audits=RedisAgreementWindow(redis_server.url, project=project))
        rule = tier_agreement_rule(evaluator.audits.snapshot, threshold=0.85, min_samples=30)
        state = RedisAlertState(redis_server.url, project=project)
        alerts = AlertManager([rule], [sink], project=project, evaluate_every_s=0, state=state)
        evaluator.add_observer(alerts.observe)
        workers.append((evaluator, alerts))
    for i in range(40):
        evaluator, _ = workers[i % 2]
        await evaluator.evaluate(f"What is the capital of France? (#{i})", ANSWER, CONTEXTS)
    for evaluator, _ in workers:
        await evaluator.drain_audits()
    for evaluator, alerts in workers:
        await alerts.tick()
        await evaluator.audits.refresh()  # type: ignore[attr-defined]  # the view as of now, not its last audit
        await alerts.aclose()
        own = local_only(evaluator.audits).snapshot()["local"]
        assert own.audits == 20
        assert tier_agreement_rule(local_only(evaluator.audits).snapshot, min_samples=30).check([], []) is None
        assert evaluator.audits.snapshot()["local"].audits == 40
    events = [e for sink in sinks for e in sink.events]
    assert [(e.rule, e.state) for e in events] == [("tier_agreement_low", "firing")]  # once for the fleet
    assert events[0].dedupe_key == f"ragtriage:{project}:tier_agreement_low"
    assert "local tier's agreement" in events[0].message


async def test_the_shared_window_keeps_the_last_size_audits_of_each_tier(redis_server) -> None:
    project = f"fleet-{uuid.uuid4().hex[:6]}"
    writers = [RedisAgreementWindow(redis_server.url, project=project, size=3) for _ in range(2)]
    for i, verdict in enumerate(("pass", "fail", "fail", "fail", None)):
        await writers[i % 2].record(outcome(audit=verdict))
    await writers[0].record(outcome("deterministic", "fail", "fail"))
    local = writers[0].snapshot()["local"]
    assert (local.audits, local.agreed, local.undecided) == (2, 0, 1)  # the last 3: fail, fail, undecided
    deterministic = writers[0].snapshot()["deterministic"]
    assert (deterministic.fails, deterministic.fails_confirmed) == (1, 1)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert client.llen(f"ragtriage:audits:{project}:local") == 3  # bounded in Redis too
    for window in writers:
        await window.aclose()


async def test_the_shared_window_forgets_audits_older_than_window_s(redis_server) -> None:
    window = RedisAgreementWindow(redis_server.url, project=f"fleet-{uuid.uuid4().hex[:6]}", window_s=0.3)
    await window.record(outcome())
    assert window.snapshot()["local"].audits == 1
    await asyncio.sleep(0.4)
    await window.refresh()
    assert window.snapshot()["local"].audits == 0
    await window.aclose()


async def test_a_worker_that_audits_nothing_follows_the_fleet_by_itself(redis_server) -> None:
    project = f"fleet-{uuid.uuid4().hex[:6]}"
    auditing = RedisAgreementWindow(redis_server.url, project=project)
    reader = RedisAgreementWindow(redis_server.url, project=project, refresh_s=0.05)
    for _ in range(3):
        await auditing.record(outcome())
    assert reader.snapshot()["local"].audits == 0  # nothing read yet: its own window; a refresh starts
    for _ in range(100):
        if reader.snapshot()["local"].audits == 3:
            break
        await asyncio.sleep(0.02)
    assert reader.snapshot()["local"].audits == 3
    for window in (auditing, reader):
        await window.aclose()


async def test_redis_down_is_counted_and_reads_fall_back_to_the_local_window(
    make, judge_server, heavy_server, redis_server, caplog: pytest.LogCaptureFixture
):
    judge_server.default = local_pass()
    heavy_server.default = heavy_verdict(passes=True)
    project = f"fleet-{uuid.uuid4().hex[:6]}"
    peer = RedisAgreementWindow(redis_server.url, project=project)
    for _ in range(5):
        await peer.record(outcome())  # another worker's audits, in Redis
    window = RedisAgreementWindow(redis_server.url, project=project, retry_after_failure_s=0.05)
    evaluator = make(audit_rate=1.0, audits=window)
    await evaluator.evaluate("What is the capital of France? (#0)", ANSWER, CONTEXTS)
    await evaluator.drain_audits()
    assert window.snapshot()["local"].audits == 6  # the fleet's
    redis_server.stop()
    for i in (1, 2):
        result = await evaluator.evaluate(f"What is the capital of France? (#{i})", ANSWER, CONTEXTS)
        assert result.verdict == "pass"
        await evaluator.drain_audits()
        await asyncio.sleep(0.06)  # past the back-off: the next audit tries Redis again
    assert window.counts["shared_window_errors"] == 2
    down = [r for r in caplog.records if r.name == "ragtriage.evaluator.fleet_audits"]
    assert [r.levelname for r in down] == ["WARNING"]  # one line an outage, not one an audit
    assert window.snapshot()["local"].audits == 3  # this process's own audits, none lost
    assert evaluator.summary()["audits"]["local"]["audits"] == 3
    redis_server.start()  # back, empty (no persistence): the next audit reads the fleet's window again
    await evaluator.evaluate("What is the capital of France? (#3)", ANSWER, CONTEXTS)
    await evaluator.drain_audits()
    assert window.snapshot()["local"].audits == 1 and len(window.outcomes("local")) == 4
    assert window.counts["shared_window_errors"] == 2
    await peer.aclose()


async def test_the_shared_window_over_tls_with_a_password_that_never_shows(tmp_path: Path) -> None:
    secret = "s3cret-pass/w@rd"
    (tmp_path / "tls").mkdir()
    with RedisServer(tmp_path, password=secret, tls=self_signed_certificate(tmp_path / "tls")) as server:
        window = RedisAgreementWindow(server.url, project="tls")
        await window.record(outcome())
        assert window.snapshot()["local"].audits == 1 and not window.counts["shared_window_errors"]
        wrong = RedisAgreementWindow(server.url.replace(quote(secret, safe=""), "wrong-pass"), project="tls")
        await wrong.record(outcome())
        assert wrong.counts["shared_window_errors"] == 1 and wrong.snapshot()["local"].audits == 1
        assert secret not in repr(window) and quote(secret, safe="") not in repr(window)
        for w in (window, wrong):
            await w.aclose()


def test_bad_arguments_are_refused() -> None:
    for kwargs, error, named in (
        ({"url": "http://redis"}, ValueError, "url"),
        ({"project": ""}, ValueError, "project"),
        ({"size": 0}, ValueError, "size"),
        ({"refresh_s": 0}, ValueError, "refresh_s"),
        ({"retry_after_failure_s": -1}, ValueError, "retry_after_failure_s"),
    ):
        with pytest.raises(error, match=named):
            RedisAgreementWindow(**{"url": "redis://127.0.0.1:6379/0", **kwargs})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="audits"):
        ragtriage.RAGEvaluator(audits=object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("role", "queue", "shared"),
    [("worker", {"evaluate_in": "queue", "queue_url": "redis://127.0.0.1:9/0"}, True), ("collector", {}, False)],
)
async def test_workers_share_the_window_and_a_single_process_keeps_its_own(role: str, queue: dict, shared: bool):
    from ragtriage.runtime import build

    config = ragtriage.Config(write_back=False, local_judge_url="http://127.0.0.1:9/v1", **queue)
    runtime = build(config, role)  # type: ignore[arg-type]
    try:
        assert runtime.evaluator is not None and runtime.evaluator.auditor == "local"
        assert isinstance(runtime.evaluator.audits, RedisAgreementWindow) is shared
        assert isinstance(runtime.evaluator.audits, AgreementWindow)
    finally:
        await runtime.aclose()


def test_two_worker_processes_one_after_the_other_alert_on_the_fleet_window(
    redis_server, judge_server: JudgeServer, heavy_server: JudgeServer, tmp_path: Path
) -> None:
    """Two real ``ragtriage worker``s, each auditing 20 samples (under ``min_samples`` 30, so neither alone could
    alert): the second alerts, once, on the fleet's 40."""
    judge_server.default = Reply(verdict_json(faithfulness=0.95, confidence=0.95))  # the samples have one document
    unsupported = [{"claim": "Paris is the capital", "supported": False, "context_index": None}]
    heavy_server.default = Reply(verdict_json(faithfulness=0.1, claims=unsupported))
    project = f"fleet-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with Receiver() as slack:
        env = {**os.environ, "PHOENIX_PROJECT_NAME": project, "RAGTRIAGE_WRITE_BACK": "false",
               "RAGTRIAGE_LOCAL_JUDGE_URL": judge_server.url, "RAGTRIAGE_HEAVY_JUDGE_URL": heavy_server.url,
               "RAGTRIAGE_AUDIT_RATE": "1.0", "RAGTRIAGE_SLACK_WEBHOOK_URL": slack.url + slack.path}  # fmt: skip
        for name in ("OPENAI_API_KEY", "RAGTRIAGE_ALERT_RULES_FILE", "RAGTRIAGE_PAGERDUTY_ROUTING_KEY"):
            env.pop(name, None)
        for round_, name in enumerate(("w1", "w2")):
            audited = 20 * (round_ + 1)
            asyncio.run(publish(redis_server.url, range(20 * round_, 20 * round_ + 20)))
            command = [sys.executable, "-m", "ragtriage.cli", "worker", "--queue", redis_server.url,
                       "--consumer", name, "--concurrency", "1"]  # fmt: skip
            with (tmp_path / f"{name}.log").open("wb") as log:
                worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: fully_consumed(client), timeout_s=120, what=f"{name} evaluated its 20 samples")
                wait_until(lambda n=audited: fleet_audits(client, project) == n, timeout_s=60,
                           what=f"{name}'s audits in the fleet window")  # fmt: skip
                if round_ == 1:  # the rules run when results arrive (at most once a second): a few more
                    for i in range(40, 46):
                        if slack.received:
                            break
                        asyncio.run(publish(redis_server.url, [i]))
                        time.sleep(1.2)
                    wait_until(lambda: slack.received, timeout_s=30, what="the fleet's alert")
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
            if round_ == 0:
                assert slack.received == []  # 20 audits: under min_samples, no alert
    assert fleet_audits(client, project) >= 40
    assert set(client.hgetall(f"ragtriage:audits:{project}:local:counts")) == {"pass:fail"}  # all disagreed
    assert len(slack.received) == 1  # once, for the fleet
    found = re.search(r"local tier's agreement with its auditor over (\d+) audits", slack.received[0]["text"])
    assert found is not None and int(found.group(1)) >= 40  # both workers' audits (w2 had at most 26 of them)


async def publish(url: str, indices: Iterable[int]) -> None:
    publisher = StreamPublisher(url)
    for i in indices:
        await publisher(sample(i))
    await publisher.aclose()


def fleet_audits(client: redis.Redis, project: str) -> int:
    return sum(int(n) for n in client.hgetall(f"ragtriage:audits:{project}:local:counts").values())
