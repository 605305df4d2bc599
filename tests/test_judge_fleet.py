"""A fleet of local judges (#19): routing by sample, failover, back-off, all servers down, metrics, the Config field.

Real HTTP to loopback judge servers; the one killed mid-run is a separate process, killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ragtriage import Config, LLMJudge, RAGEvaluator
from ragtriage.dashboards.metrics import enable_metrics
from ragtriage.judges import fleet as fleet_module
from ragtriage.runtime import build_evaluator
from ragtriage.testing import JudgeServer, Reply, verdict_json

CONTEXTS = ["Paris is the capital of France.", "Berlin is the capital of Germany."]
VALID = verdict_json(documents=[{"index": 1, "relevance": 1.0}, {"index": 2, "relevance": 0.1}])


def question(i: int) -> str:
    return f"What is the capital of country number {i}?"


@pytest.fixture
def servers() -> Iterator[list[JudgeServer]]:
    started = [JudgeServer(default=Reply(VALID)).start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def fleet_judge(urls: list[str], **kwargs: object) -> LLMJudge:
    return LLMJudge(**{"model": "m", "base_url": urls, "max_retries": 0, "timeout_s": 5, **kwargs})  # type: ignore[arg-type]


def asked(server: JudgeServer) -> set[str]:
    return {body["messages"][1]["content"] for body in server.requests}


async def test_each_sample_goes_to_one_server_every_time_and_samples_spread(servers: list[JudgeServer]) -> None:
    judge = fleet_judge([s.url for s in servers])
    for _ in range(2):
        for i in range(30):
            await judge.judge(question(i), "Paris.", CONTEXTS)
    counts = [len(s.requests) for s in servers]
    assert sum(counts) == 60 and min(counts) >= 4  # spread (30 samples over 3 servers)
    for server in servers:  # twice each sample, both times on the same server
        by_question: dict[str, int] = {}
        for body in server.requests:
            text = body["messages"][1]["content"]
            q = next(line for line in text.splitlines() if line.startswith("What is"))
            by_question[q] = by_question.get(q, 0) + 1
        assert set(by_question.values()) == {2}
    # another judge (another process, after a restart) routes the same way
    again = fleet_judge([s.url for s in servers])
    home = next(s for s in servers if any("number 7?" in text for text in asked(s)))
    before = len(home.requests)
    await again.judge(question(7), "Paris.", CONTEXTS)
    assert len(home.requests) == before + 1
    await judge.aclose()
    await again.aclose()


def judge_process() -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys\n"
        "from ragtriage.testing import JudgeServer, Reply, verdict_json\n"
        f"s = JudgeServer(default=Reply({VALID!r}, delay_s=0.02))\n"
        "print(s.start().url, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def test_a_server_killed_mid_run_fails_over_and_no_evaluation_is_lost(servers: list[JudgeServer]) -> None:
    proc, doomed = judge_process()
    try:
        urls = [doomed, servers[0].url, servers[1].url]
        judge = fleet_judge(urls, max_concurrency=8)
        evaluator = RAGEvaluator(local_judge=judge, sample_rate=1.0, cache=False)
        statuses: list[str] = []
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while issued < 120:
                i = issued
                issued += 1
                if i == 40:  # in the middle of the run, with requests in flight
                    os.kill(proc.pid, signal.SIGKILL)
                result = await evaluator.evaluate(question(i), "Paris.", CONTEXTS)
                statuses.append(f"{result.tier}:{result.status}")

        await asyncio.gather(*(worker() for _ in range(8)))
        assert proc.wait(5) == -signal.SIGKILL
        dead = judge.servers[0]
        assert dead.errors >= 1 and not dead.available(time.monotonic())  # taken out for a back-off
        # Calls in flight on the killed server were resent to the next one; none is lost or guessed.
        assert statuses.count("local:ok") == 120, statuses
        assert dead.calls - dead.errors > 0  # it did serve before it died
        calls_then = dead.calls
        for i in range(120, 150):  # while it is out, its samples go elsewhere without trying it
            result = await evaluator.evaluate(question(i), "Paris.", CONTEXTS)
            assert (result.tier, result.status) == ("local", "ok")
        assert dead.calls == calls_then
        assert len(servers[0].requests) + len(servers[1].requests) == sum(s.calls - s.errors for s in judge.servers[1:])
        await evaluator.aclose()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_all_servers_down_is_a_judge_error_at_once_never_a_hang(servers: list[JudgeServer]) -> None:
    judge = fleet_judge([s.url for s in servers], timeout_s=2)
    evaluator = RAGEvaluator(local_judge=judge, sample_rate=1.0, cache=False)
    assert (await evaluator.evaluate(question(1), "Paris.", CONTEXTS)).status == "ok"
    for server in servers:
        server.stop()
    first = await asyncio.wait_for(evaluator.evaluate(question(2), "Paris.", CONTEXTS), 10)  # a hang fails here
    assert first.status == "judge_error" and "connection failed" in str(first.error)
    assert [s.available(time.monotonic()) for s in judge.servers] == [False] * 3
    second = await asyncio.wait_for(evaluator.evaluate(question(3), "Paris.", CONTEXTS), 10)
    assert second.status == "judge_error"
    assert "all 3 servers are out" in str(second.error)
    assert first.faithfulness is None and second.faithfulness is None  # no made-up score
    await evaluator.aclose()


async def test_a_server_back_after_its_back_off_gets_its_samples_again(
    servers: list[JudgeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_module, "BACKOFF_S", 0.3)
    judge = fleet_judge([s.url for s in servers])
    await judge.judge(question(5), "Paris.", CONTEXTS)
    home = next(i for i, s in enumerate(servers) if s.requests)
    port = int(servers[home].url.rsplit(":", 1)[1].split("/")[0])
    servers[home].stop()
    await judge.judge(question(5), "Paris.", CONTEXTS)  # fails over
    assert not judge.servers[home].available(time.monotonic())
    servers[home] = JudgeServer(default=Reply(VALID), port=port).start()
    await judge.judge(question(5), "Paris.", CONTEXTS)  # still out: goes elsewhere
    assert not servers[home].requests
    await asyncio.sleep(0.35)
    await judge.judge(question(5), "Paris.", CONTEXTS)
    assert len(servers[home].requests) == 1 and judge.servers[home].failures_in_a_row == 0
    await judge.aclose()


async def test_a_slow_server_is_taken_out_an_erroring_one_is_not(servers: list[JudgeServer]) -> None:
    gate = threading.Event()
    servers[0].default = Reply(VALID, block=gate)
    servers[1].default = Reply(status=503, body='{"error": {"message": "overloaded"}}')
    try:
        judge = fleet_judge([s.url for s in servers], timeout_s=0.3)
        for i in range(12):
            verdict = await judge.judge(question(i), "Paris.", CONTEXTS)
            assert verdict.output.faithfulness == 0.9
        slow, busy, good = judge.servers
        assert slow.errors == 1 and not slow.available(time.monotonic())  # timed out once, then left alone
        assert busy.errors >= 1 and busy.available(time.monotonic())  # answered 503: tried again next time
        assert good.errors == 0 and good.calls == 12
        assert judge.retries == slow.errors + busy.errors
    finally:
        gate.set()


async def test_per_server_metrics(servers: list[JudgeServer]) -> None:
    servers[2].default = Reply(status=500, body="{}")
    judge = fleet_judge([s.url for s in servers])
    evaluator = RAGEvaluator(local_judge=judge, sample_rate=1.0, cache=False)
    reader = InMemoryMetricReader()
    metrics = enable_metrics(evaluator, meter_provider=MeterProvider(metric_readers=[reader]))
    for i in range(20):
        await evaluator.evaluate(question(i), "Paris.", CONTEXTS)
    points = {
        (p.attributes["server"], p.attributes["outcome"]): p.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "ragtriage.eval.judge.server.requests"
        for p in m.data.data_points
    }
    for server, stats in zip(servers, judge.servers, strict=True):
        assert points[(server.url, "ok")] == len(server.requests) - (stats.errors if server is servers[2] else 0)
        assert points[(server.url, "error")] == stats.errors
    assert points[(servers[2].url, "error")] == len(servers[2].requests) > 0
    metrics.disable()
    await evaluator.aclose()


def test_config_takes_a_list_in_code_and_commas_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]
    assert Config(local_judge_url=urls).local_judge_url == tuple(urls)
    assert Config(local_judge_url=urls[0]).local_judge_url == (urls[0],)
    monkeypatch.setenv("RAGTRIAGE_LOCAL_JUDGE_URL", " , ".join(urls))
    config = Config.from_env()
    assert config.local_judge_url == tuple(urls)
    assert Config.from_env(**{}).to_env()["RAGTRIAGE_LOCAL_JUDGE_URL"] == ",".join(urls)  # a child reads it back
    judge = build_evaluator(config).local_judge
    assert isinstance(judge, LLMJudge) and [s.url for s in judge.servers] == urls
    with pytest.raises(ValueError, match="local_judge_url"):
        Config(local_judge_url=[urls[0], "vllm:8000"])
    with pytest.raises(ValueError, match="local_judge_url"):
        Config(local_judge_url=[])
    with pytest.raises(ValueError, match="base_url"):
        LLMJudge(model="m", base_url=[urls[0], urls[0]])
    monkeypatch.setenv("RAGTRIAGE_LOCAL_JUDGE_URL", f"{urls[0]},not-a-url")
    assert Config.from_env().local_judge_url is None  # a bad environment: warned, default used
