"""Scale-out over a real redis-server: producers, `ragtriage worker` processes, SIGKILL, poison, restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider

import ragtriage
from ragtriage import RAGEvaluationResult, RAGEvaluator
from ragtriage.alerts import AlertEvent, AlertManager, RedisAlertState, ShareRule
from ragtriage.config import Config
from ragtriage.evaluator.cache import RedisCache
from ragtriage.export import PhoenixWriter
from ragtriage.handoff.redis_stream import DEFAULT_GROUP, StreamPublisher, StreamWorker, dead_letter_stream
from ragtriage.instrumentation import installed_processor
from ragtriage.pipeline import Pipeline
from ragtriage.sample import DEFAULT_STREAM, Document, RAGSample
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.redis_server import RedisServer, free_port
from ragtriage.testing.tls import self_signed_certificate

pytestmark = pytest.mark.redis
HERE = Path(__file__).parent


def sample(i: int) -> RAGSample:
    return RAGSample(
        trace_id=0x1000 + i,
        root_span_id=0x2000 + i,
        question=f"What is the capital of France? (#{i})",
        answer="Paris is the capital of France.",
        documents=[Document("Paris is the capital of France.", span_id=0x3000 + i)],
    )


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def fully_consumed(client: redis.Redis) -> bool:
    groups = client.xinfo_groups(DEFAULT_STREAM)
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0


class ListWriter:
    def __init__(self) -> None:
        self.items: list[tuple[RAGSample, RAGEvaluationResult]] = []

    async def write(self, sample: RAGSample, result: RAGEvaluationResult) -> None:
        self.items.append((sample, result))

    async def aclose(self) -> None:
        pass


def test_instrument_with_a_queue_publishes_from_the_background_thread(redis_server) -> None:
    provider = TracerProvider()
    ragtriage.instrument(
        tracer_provider=provider,
        evaluate_in="queue",
        queue_url=redis_server.url,
        sample_rate=1.0,
        auto_instrument=False,
    )
    try:
        tracer = provider.get_tracer("app")
        retriever = {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.content": "Paris."}
        with (
            tracer.start_as_current_span("rag", attributes={"input.value": "Capital?", "output.value": "Paris."}),
            tracer.start_as_current_span("r", attributes=retriever),
        ):
            pass
        assert provider.force_flush(10_000)
        client = redis.Redis.from_url(redis_server.url)
        [(_, fields)] = client.xrange(DEFAULT_STREAM)
        queued = RAGSample.from_json(fields[b"sample"])
        assert (queued.question, queued.answer, queued.contexts) == ("Capital?", "Paris.", ["Paris."])
        processor = installed_processor()
        assert processor is not None and processor.stats["queue_published"] == 1
        assert "evaluations_ok" not in processor.stats  # evaluated by the workers, not here

        redis_server.stop()  # Redis unreachable: the app goes on, the sample is dropped and counted
        with (
            tracer.start_as_current_span("rag", attributes={"input.value": "Capital?", "output.value": "Paris."}),
            tracer.start_as_current_span("r", attributes=retriever),
        ):
            pass
        assert provider.force_flush(10_000)
        assert processor.stats["queue_dropped"] == 1
    finally:
        ragtriage.uninstrument()


@pytest.mark.phoenix
def test_two_producers_two_workers_one_killed_every_sample_written_back_once(
    redis_server, phoenix, judge_server: JudgeServer, tmp_path
) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.93, confidence=0.95), delay_s=0.15)
    project = f"fleet-{os.getpid()}-{int(time.time())}"
    env = {
        **os.environ,
        "PHOENIX_COLLECTOR_ENDPOINT": phoenix.url,
        "PHOENIX_PROJECT_NAME": project,
        "RAGTRIAGE_LOCAL_JUDGE_URL": judge_server.url,
    }
    for name in ("OPENAI_API_KEY", "RAGTRIAGE_SLACK_WEBHOOK_URL", "RAGTRIAGE_PAGERDUTY_ROUTING_KEY"):
        env.pop(name, None)
    per_producer = 15

    def start_worker(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        command = [sys.executable, "-m", "ragtriage.cli", "worker", "--queue", redis_server.url, "--consumer", name,
                   "--concurrency", "4", "--claim-idle-s", "1"]  # fmt: skip
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    workers = [start_worker("w1"), start_worker("w2")]
    producers = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "stream_producer.py"),
                redis_server.url,
                phoenix.url,
                project,
                str(per_producer),
                tag,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tag in ("p1", "p2")
    ]
    roots: list[str] = []
    for producer in producers:
        out, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err.decode()[-2000:]
        roots += json.loads(out)
    assert len(set(roots)) == 2 * per_producer

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)

    # kill w1 mid-batch: it has taken entries that it will never acknowledge
    def w1_holds_entries() -> bool:
        return any(
            c["name"] == "w1" and c["pending"] > 0 for c in client.xinfo_consumers(DEFAULT_STREAM, DEFAULT_GROUP)
        )

    wait_until(w1_holds_entries, what="w1 to hold entries")
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].wait(10)
    wait_until(lambda: fully_consumed(client), timeout_s=120, what="every entry acknowledged")
    workers[1].send_signal(signal.SIGTERM)
    assert workers[1].wait(30) == 0, (tmp_path / "w2.log").read_text()[-2000:]

    assert client.xlen(dead_letter_stream(DEFAULT_STREAM)) == 0
    # every sample has its annotations exactly once, on its own root span
    rows: list[dict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = httpx.get(
            f"{phoenix.url}/v1/projects/{project}/span_annotations",
            params={"span_ids": roots, "include_annotation_names": "answer", "limit": 1000},
        )
        rows = response.json()["data"] if response.status_code == 200 else []
        if len(rows) >= len(roots):
            break
        time.sleep(0.2)
    assert sorted(r["span_id"] for r in rows) == sorted(roots)
    evaluator_spans = httpx.get(
        f"{phoenix.url}/v1/projects/{project}/spans", params={"span_kind": "EVALUATOR", "limit": 1000}
    ).json()["data"]
    targets = [s["attributes"]["ragtriage.target_span_id"] for s in evaluator_spans]
    assert sorted(targets) == sorted(roots)  # one EVALUATOR span per sample, even for redelivered ones


async def test_poison_entries_go_to_the_dead_letter_stream(redis_server) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    await client.xadd(DEFAULT_STREAM, {"sample": "{not json"})
    if True:  # Phoenix is down for good: every write-back of this sample fails
        writer = PhoenixWriter(
            endpoint=f"http://127.0.0.1:{free_port()}", project_name="p", max_retries=0, timeout_s=0.5
        )
        pipeline = Pipeline(RAGEvaluator(sample_rate=1.0), writer=writer)
        worker = StreamWorker(pipeline, redis_server.url, claim_idle_s=0.2, max_deliveries=3, block_ms=100)
        await client.xadd(DEFAULT_STREAM, {"sample": sample(1).to_json()})
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        for _ in range(200):
            if await client.xlen(dead_letter_stream(DEFAULT_STREAM)) == 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await run
    dead = {
        fields["reason"].split(":")[0]: fields for _, fields in await client.xrange(dead_letter_stream(DEFAULT_STREAM))
    }
    assert set(dead) == {"undecodable", "write-back failed"}
    assert dead["write-back failed"]["deliveries"] == "3"
    assert RAGSample.from_json(dead["write-back failed"]["sample"]).sample_id == sample(1).sample_id
    assert pipeline.counts["write_back_failed"] == 3  # tried K times, then given up on, not lost
    assert (await client.xpending(DEFAULT_STREAM, DEFAULT_GROUP))["pending"] == 0
    await client.aclose()


async def test_a_redis_restart_is_survived(persistent_redis) -> None:
    writer = ListWriter()
    worker = StreamWorker(Pipeline(RAGEvaluator(sample_rate=1.0), writer=writer), persistent_redis.url, block_ms=100)
    client = redis.Redis.from_url(persistent_redis.url)
    for i in range(5):
        client.xadd(DEFAULT_STREAM, {"sample": sample(i).to_json()})
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    while len(writer.items) < 5:  # noqa: ASYNC110 - the worker task fills the list
        await asyncio.sleep(0.05)
    await asyncio.to_thread(persistent_redis.stop)
    await asyncio.sleep(0.5)  # the worker meets a dead Redis and backs off
    await asyncio.to_thread(persistent_redis.start)
    client = redis.Redis.from_url(persistent_redis.url)
    for i in range(5, 10):
        client.xadd(DEFAULT_STREAM, {"sample": sample(i).to_json()})
    for _ in range(400):
        if len(writer.items) >= 10:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await run
    assert sorted(s.sample_id for s, _ in writer.items) == sorted(sample(i).sample_id for i in range(10))
    assert worker.counts["redis_errors"] >= 1 and worker.counts["acked"] == 10


async def test_fleet_wide_alerts_fire_once_not_once_per_worker(redis_server) -> None:
    sent: list[AlertEvent] = []

    class Sink:
        name = "list"

        async def send(self, event: AlertEvent) -> None:
            sent.append(event)

    def manager() -> AlertManager:
        rule = ShareRule(name="heavy_share_high", what="heavy share", limit=0.3, predicate=lambda o: o.tier == "heavy",
                         window_size=40, min_samples=10)  # fmt: skip
        state = RedisAlertState(redis_server.url, project="fleet")
        return AlertManager([rule], [Sink()], project="fleet", evaluate_every_s=0, state=state)

    workers = [manager() for _ in range(2)]
    heavy = RAGEvaluationResult(sampled=True, sample_key=None, question="q", tier="heavy", verdict="pass")
    for _ in range(15):
        for worker in workers:  # both workers see heavy-tier results, and both judge the shared window
            worker.observe(heavy)
            await asyncio.sleep(0)
        await asyncio.gather(*(w.tick() for w in workers))
    for worker in workers:
        await worker.aclose()
    assert [e.state for e in sent] == ["firing"]
    assert sent[0].dedupe_key == "ragtriage:fleet:heavy_share_high"


def test_workers_and_the_queue_over_tls_with_a_password_that_never_shows(
    tmp_path: Path, judge_server: JudgeServer, caplog: pytest.LogCaptureFixture
) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.93, confidence=0.95))
    secret = "s3cret-pass/w@rd"
    (tmp_path / "tls").mkdir()
    with RedisServer(tmp_path, password=secret, tls=self_signed_certificate(tmp_path / "tls")) as server:
        url = server.url  # rediss://:<password>@127.0.0.1:<port>/0?ssl_ca_certs=<the test's certificate>
        wrong = url.replace(quote(secret, safe=""), "wrong-pass")
        assert url.startswith("rediss://") and wrong != url

        async def publish(queue: str, n: int) -> StreamPublisher:
            publisher = StreamPublisher(queue)
            for i in range(n):
                await publisher(sample(i))
            await publisher.aclose()
            return publisher

        with caplog.at_level(logging.DEBUG):
            refused = asyncio.run(publish(wrong, 1))
            publisher = asyncio.run(publish(url, 3))
        assert refused.counts["dropped"] == 1 and publisher.counts["published"] == 3
        assert "AuthenticationError" in caplog.text

        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGTRIAGE_", "OPENAI", "PHOENIX"))}
        env |= {"RAGTRIAGE_LOCAL_JUDGE_URL": judge_server.url, "RAGTRIAGE_WRITE_BACK": "false"}

        def run_worker(queue: str, name: str) -> tuple[subprocess.Popen[bytes], Path]:
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                command = [sys.executable, "-m", "ragtriage.cli", "worker", "--consumer", name]
                # the queue and the verdict cache on the same password-protected, TLS-only Redis
                worker_env = env | {"RAGTRIAGE_QUEUE_URL": queue, "RAGTRIAGE_REDIS_URL": queue}
                return subprocess.Popen(command, env=worker_env, stdout=out, stderr=subprocess.STDOUT), log

        locked_out, locked_log = run_worker(wrong, "locked-out")
        wait_until(lambda: "Redis unavailable (AuthenticationError)" in locked_log.read_text(), what="the refusal")
        locked_out.send_signal(signal.SIGTERM)
        assert locked_out.wait(30) == 0

        worker, worker_log = run_worker(url, "w1")
        client = redis.Redis.from_url(url, decode_responses=True)
        wait_until(lambda: fully_consumed(client), timeout_s=60, what="every entry acknowledged")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert "'acked': 3" in worker_log.read_text()
        assert len(judge_server.requests) >= 3  # judged by the worker, and its verdicts cached over TLS too
        assert len(client.keys("ragtriage:v*")) == 3
        config = Config(queue_url=url, redis_url=url, evaluate_in="queue")
        shown = [
            repr(config),
            str(config),
            repr(server),
            repr(publisher),
            repr(StreamWorker(Pipeline(RAGEvaluator(sample_rate=1.0)), url)),
            repr(RedisCache(url)),
            repr(RedisAlertState(url, project="p")),
        ]
    for text in (*shown, caplog.text, locked_log.read_text(), worker_log.read_text()):
        for password in (secret, quote(secret, safe=""), "wrong-pass"):
            assert password not in text
