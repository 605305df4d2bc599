"""Session scores: tallies by ``session.id`` in memory and in a real redis-server, closing once idle, the session
judge over the loopback judge, the failed-sessions alert, and the same in every role (thread, evaluator process,
``ragtriage worker`` fleet sharing Redis, collector) against a real ``phoenix serve``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest

import ragtriage
from ragtriage import LLMJudge, RAGEvaluationResult
from ragtriage.alerts import AlertEvent, AlertManager, failed_sessions_rule
from ragtriage.config import Config
from ragtriage.evaluator.cost import CostTracker
from ragtriage.export.sessions import SESSION_ANNOTATIONS, session_annotations
from ragtriage.instrumentation import installed_processor
from ragtriage.judges.session import SessionJudge
from ragtriage.runtime import build
from ragtriage.sample import RAGSample
from ragtriage.sessions import MemorySessionStore, RedisSessionStore, SessionScore, SessionScorer
from ragtriage.testing import JudgeServer, Reply
from ragtriage.testing.phoenix import PhoenixServer
from tests.test_phoenix import app_provider
from tests.test_streams import fully_consumed, wait_until


def result(verdict: str = "pass", tier: str | None = "local", faithfulness: float = 0.9) -> RAGEvaluationResult:
    return RAGEvaluationResult(
        sampled=True, sample_key=None, question="q", verdict=verdict, tier=tier, faithfulness=faithfulness,  # type: ignore[arg-type]
        relevance=0.9, answer_quality=0.9, eval_cost_usd=0.001,
    )  # fmt: skip


def turn(session_id: str | None, i: int, question: str = "q", answer: str = "a") -> RAGSample:
    history = [{"role": "user", "content": f"turn {j}"} for j in range(i)]
    return RAGSample(7, i + 1, question, answer, [], ended_at=1000.0 + i, history=history, session_id=session_id)


async def test_a_session_is_scored_once_idle_with_its_worst_turn_and_tiers() -> None:
    scorer = SessionScorer(idle_s=30)
    await scorer.record(turn("s1", 0), result())
    await scorer.record(turn("s1", 1), result("fail", "deterministic", 0.0))
    await scorer.record(turn("s1", 2), result("pass", "heavy", 0.8))
    await scorer.record(turn(None, 0), result())  # no session: counted nowhere
    assert await scorer.sweep() == []  # not idle yet
    (score,) = await scorer.sweep(now=time.time() + 31)
    assert (score.session_id, score.turns, score.failed, score.failed_share) == ("s1", 3, 1, 1 / 3)
    assert score.tiers == {"local": 1, "deterministic": 1, "heavy": 1}
    assert score.worst["span_id"] == f"{2:016x}" and score.worst["verdict"] == "fail"
    assert score.worst["score"] is None  # a free-tier fail's implied 0 is not a score to average over sessions
    assert score.cost_usd == pytest.approx(0.003)
    assert score.conversation == []  # no session judge: the tally keeps no text
    assert scorer.totals() == (1, 1)  # (with a failed turn, closed)
    assert await scorer.sweep(now=time.time() + 3600) == []  # closed once
    await scorer.aclose()


async def test_memory_store_is_bounded_and_closes_the_oldest_early() -> None:
    store = MemorySessionStore(max_sessions=2)
    scorer = SessionScorer(store=store, idle_s=60)
    for name in ("a", "b", "c"):
        await scorer.record(turn(name, 0), result())
    assert store.open_sessions == 2 and store.closed_early == 1
    assert [s.session_id for s in await scorer.sweep()] == ["a"]  # not idle, but it had to go: scored, not lost
    await scorer.aclose()


def test_arguments_are_checked() -> None:
    for kwargs, error, named in (
        ({"idle_s": 0}, ValueError, "idle_s"),
        ({"idle_s": "5"}, ValueError, "idle_s"),
        ({"store": object()}, TypeError, "store"),
        ({"judge": object()}, TypeError, "judge"),
        ({"writer": object()}, TypeError, "writer"),
        ({"cost_tracker": 1.0}, TypeError, "cost_tracker"),
        ({"max_per_sweep": 0}, ValueError, "max_per_sweep"),
    ):
        with pytest.raises(error, match=named):
            SessionScorer(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_sessions"):
        MemorySessionStore(max_sessions=0)


@pytest.mark.redis
async def test_workers_sharing_redis_score_a_session_once_with_every_turn(
    redis_server, judge_server: JudgeServer
) -> None:
    """Two workers evaluate the turns of one conversation between them; both sweep; one closes it, whole, and
    its session judge reads the conversation up to the last turn, whichever worker recorded that."""
    judge_server.default = session_judge_reply
    project = f"p-{uuid.uuid4().hex[:6]}"
    llm = LLMJudge(model="m", base_url=judge_server.url, max_retries=0)
    workers = [
        SessionScorer(store=RedisSessionStore(redis_server.url, project=project), idle_s=5, judge=SessionJudge(llm))
        for _ in range(2)
    ]
    for i in range(5):
        await workers[i % 2].record(turn("chat", i), result("fail" if i == 3 else "pass", "local", 0.2 + i / 10))
    assert await workers[0].sweep() == [] and await workers[1].sweep() == []
    later = time.time() + 6
    closed = await asyncio.gather(*(w.sweep(now=later) for w in workers))
    scores = [s for batch in closed for s in batch]
    assert len(scores) == 1
    (score,) = scores
    assert (score.turns, score.failed, score.tiers) == (5, 1, {"local": 5})
    assert score.worst["span_id"] == f"{4:016x}"  # turn 3 (span 4) failed
    assert [t["content"] for t in score.conversation] == ["turn 0", "turn 1", "turn 2", "turn 3", "q", "a"]
    assert len(judge_server.requests) == 1 and score.resolved is False
    # the alert reads the fleet's totals, whichever worker closed the session
    await asyncio.gather(*(w.sweep(now=later) for w in workers))
    assert {await w.store.totals() for w in workers} == {(1, 1)}
    for w in workers:
        await w.aclose()
    await llm.aclose()


@pytest.mark.redis
async def test_redis_down_is_counted_not_raised(redis_server) -> None:
    scorer = SessionScorer(store=RedisSessionStore(redis_server.url, project="down"), idle_s=5)
    redis_server.stop()
    await scorer.record(turn("s", 0), result())
    assert await scorer.sweep(now=time.time() + 10) == []
    assert scorer.counts["session_record_errors"] == 1 and scorer.counts["session_take_errors"] == 1
    await scorer.aclose()


def session_judge_reply(body: dict) -> Reply:
    assert body["messages"][0]["content"].startswith("You read one conversation")
    return Reply('{"resolved": false, "score": 0.2, "reason": "the user asked twice and gave up"}')


async def test_the_session_judge_is_off_by_default_and_counted_in_cost_when_on(judge_server: JudgeServer) -> None:
    judge_server.default = session_judge_reply
    costs = CostTracker()
    llm = LLMJudge(model="m", base_url=judge_server.url, input_usd_per_1m=1.0, output_usd_per_1m=2.0, max_retries=0)
    scorer = SessionScorer(idle_s=1, judge=SessionJudge(llm), cost_tracker=costs)
    await scorer.record(turn("s", 1, "And the price?", "I do not know."), result())
    (score,) = await scorer.sweep(now=time.time() + 2)
    assert (score.resolved, score.resolution_score) == (False, 0.2)
    assert score.resolution_cost_usd == pytest.approx((400 * 1.0 + 120 * 2.0) / 1e6)
    assert score.cost_usd == pytest.approx(0.001 + score.resolution_cost_usd)
    assert costs.totals()["session"].calls == 1
    user = judge_server.requests[-1]["messages"][-1]["content"]
    assert "user: turn 0\nuser: And the price?\nassistant: I do not know." in user and "CONVERSATION>>>" in user
    rows = {r["name"]: r for r in session_annotations(score, "http://phoenix")}
    assert rows["session_resolved"]["result"]["label"] == "unresolved"

    judge_server.default = Reply('{"resolved": "maybe"}')  # a reply off its schema: an error, never a guess
    await scorer.record(turn("t", 0), result())
    (score,) = await scorer.sweep(now=time.time() + 2)
    assert score.resolved is None and "schema" in (score.resolution_error or "")
    assert {r["name"]: r for r in session_annotations(score, "http://p")}["session_resolved"]["result"] == {
        "label": "judge_error",
        "explanation": score.resolution_error,
    }
    await llm.aclose()

    assert SessionScorer().judge is None
    assert build(Config(write_back=False), "app").pipeline.sessions.judge is None  # type: ignore[union-attr]


async def test_failed_sessions_alert_fires_on_the_share_of_sessions_with_a_failed_turn() -> None:
    sent: list[AlertEvent] = []

    class Sink:
        name = "list"

        async def send(self, event: AlertEvent) -> None:
            sent.append(event)

    scorer = SessionScorer(idle_s=1)
    manager = AlertManager([failed_sessions_rule(scorer.totals)], [Sink()], evaluate_every_s=0)
    await manager.tick()
    for i in range(10):
        await scorer.record(turn(f"s{i}", 0), result("fail" if i < 4 else "pass"))
    await scorer.sweep(now=time.time() + 2)
    assert scorer.totals() == (4, 10)
    await manager.tick()
    await manager.aclose()
    assert [(e.rule, e.state) for e in sent] == [("failed_sessions_high", "firing")]
    await scorer.aclose()


@pytest.mark.parametrize(
    ("role", "env", "shared"),
    [
        ("app", {}, False),
        ("collector", {}, False),
        ("evaluator_process", {}, False),
        ("worker", {"queue_url": "redis://127.0.0.1:1"}, True),
    ],
)
def test_every_role_that_evaluates_scores_sessions(role: str, env: dict, shared: bool) -> None:
    config = Config(write_back=False, session_idle_s=7.0, **env, **({"evaluate_in": "queue"} if env else {}))
    runtime = build(config, role)  # type: ignore[arg-type]
    assert runtime.pipeline is not None and runtime.pipeline.sessions is not None
    sessions = runtime.pipeline.sessions
    assert sessions.idle_s == 7.0
    assert isinstance(sessions.store, RedisSessionStore if shared else MemorySessionStore)
    assert runtime.alerts is not None and "failed_sessions_high" in [r.name for r in runtime.alerts.rules]
    assert build(Config(write_back=False, session_idle_s=0.0), "app").pipeline.sessions is None  # type: ignore[union-attr]


def test_session_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTRIAGE_SESSION_IDLE_S", "42")
    monkeypatch.setenv("RAGTRIAGE_SESSION_JUDGE", "true")
    monkeypatch.setenv("RAGTRIAGE_MAX_HISTORY_TURNS", "3")
    config = Config.from_env()
    assert (config.session_idle_s, config.session_judge, config.max_history_turns) == (42.0, True, 3)
    monkeypatch.setenv("RAGTRIAGE_SESSION_IDLE_S", "soon")
    assert Config.from_env().session_idle_s == 300.0  # warned, default kept
    with pytest.raises(ValueError, match="session_idle_s"):
        Config(session_idle_s=-1.0)


def conversation(provider, session_id: str, n: int = 3) -> list[int]:
    """``n`` RAG turns of one conversation, the session on every span as OpenInference's using_session sets it."""
    tracer = provider.get_tracer("chat")
    roots = []
    for i in range(n):
        question, answer = f"Question {i} about Paris?", "Paris is the capital of France."
        with tracer.start_as_current_span(
            "chat", attributes={"openinference.span.kind": "CHAIN", "input.value": question, "session.id": session_id}
        ) as root:
            docs = {
                "openinference.span.kind": "RETRIEVER",
                "session.id": session_id,
                "retrieval.documents.0.document.content": "Paris is the capital and largest city of France.",
            }
            with tracer.start_as_current_span("retrieve", attributes=docs):
                pass
            root.set_attribute("output.value", answer)
        roots.append(root.get_span_context().span_id)
    return roots


def phoenix_session(phoenix: PhoenixServer, project: str, session_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    rows: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.get(
            f"{phoenix.url}/v1/projects/{project}/session_annotations", params={"session_ids": session_id}
        )
        rows = response.json()["data"] if response.status_code == 200 else []
        if rows:
            return {r["name"]: r for r in rows}
        time.sleep(0.2)
    raise AssertionError(f"no annotations on session {session_id}")


@pytest.mark.phoenix
def test_process_mode_scores_the_session_in_the_evaluator_process(phoenix: PhoenixServer) -> None:
    project = f"sessions-process-{uuid.uuid4().hex[:6]}"
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, evaluate_in="process",
        auto_instrument=False, session_idle_s=3.0,
    )  # fmt: skip
    try:
        conversation(provider, "process-chat")
        assert provider.force_flush(30_000)
        processor = installed_processor()
        assert processor is not None and processor.force_flush(60_000)
        rows = phoenix_session(phoenix, project, "process-chat")
        assert rows["session_failed_share"]["metadata"]["turns"] == 3
        assert rows["session_tiers"]["result"]["label"] == "deterministic 3"  # no judge: the free tiers
    finally:
        ragtriage.uninstrument()
        provider.shutdown()


@pytest.mark.phoenix
def test_the_evaluator_process_writes_its_open_sessions_when_its_pipe_closes(phoenix: PhoenixServer) -> None:
    project = f"sessions-process-end-{uuid.uuid4().hex[:6]}"
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, evaluate_in="process",
        auto_instrument=False, session_idle_s=300,
    )  # fmt: skip
    try:
        conversation(provider, project, n=2)
        assert provider.force_flush(30_000)
    finally:
        ragtriage.uninstrument()  # the child sees EOF, finishes its samples, then writes the open session
        provider.shutdown()
    rows = phoenix_session(phoenix, project, project, timeout_s=30)
    assert rows["session_failed_share"]["metadata"]["turns"] == 2


@pytest.mark.phoenix
@pytest.mark.redis
def test_a_worker_fleet_writes_each_session_once_with_all_its_turns(redis_server, phoenix, tmp_path) -> None:
    """The app publishes to the queue; two ``ragtriage worker`` processes evaluate the turns between them."""
    project = f"sessions-fleet-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PHOENIX_COLLECTOR_ENDPOINT": phoenix.url, "PHOENIX_PROJECT_NAME": project,
           "RAGTRIAGE_SESSION_IDLE_S": "4"}  # fmt: skip
    for name in ("OPENAI_API_KEY", "RAGTRIAGE_LOCAL_JUDGE_URL", "RAGTRIAGE_SLACK_WEBHOOK_URL"):
        env.pop(name, None)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ragtriage.cli",
                "worker",
                "--queue",
                redis_server.url,
                "--consumer",
                name,
                "--concurrency",
                "1",
            ],
            env=env,
            stdout=(tmp_path / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name in ("w1", "w2")
    ]
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, evaluate_in="queue", queue_url=redis_server.url, sample_rate=1.0,
        auto_instrument=False,
    )  # fmt: skip
    try:
        conversation(provider, "fleet-chat", n=6)
        assert provider.force_flush(30_000)
        import redis

        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        wait_until(lambda: fully_consumed(client), timeout_s=120, what="every turn evaluated")
        rows = phoenix_session(phoenix, project, "fleet-chat")
        assert rows["session_failed_share"]["metadata"]["turns"] == 6  # one tally, whichever worker judged a turn
    finally:
        ragtriage.uninstrument()
        provider.shutdown()
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)


def test_score_row_shapes_match_phoenix_api() -> None:
    score = SessionScore(
        session_id="s", turns=2, failed=0, errors=0, tiers={"cache": 2}, worst={"trace_id": "ab", "score": 0.9,
        "verdict": "pass", "question": "q"}, cost_usd=0.0, first_seen=1.0, last_seen=2.0,
    )  # fmt: skip
    rows = session_annotations(score, "http://phoenix:6006")
    assert [r["name"] for r in rows] == ["session_failed_share", "session_worst_turn", "session_tiers"]
    assert all(set(r) == {"session_id", "name", "annotator_kind", "identifier", "result", "metadata"} for r in rows)
    assert rows[1]["metadata"]["url"] == "http://phoenix:6006/redirects/traces/ab"


@pytest.mark.parametrize("idle_s", [0.3, 300.0], ids=["once idle", "when it stops"])
def test_the_collector_scores_sessions_of_traces_received_over_otlp(idle_s: float) -> None:
    """Spans over OTLP/HTTP JSON from another service: the turns are grouped by their ``session.id`` attribute;
    a session still open when the collector stops is scored then."""
    from ragtriage.collector.assembly import TraceAssembler
    from ragtriage.collector.collector import Collector
    from ragtriage.evaluator.evaluator import RAGEvaluator
    from ragtriage.pipeline import Pipeline
    from tests.test_collector import json_request, json_span, serving

    scores: list[SessionScore] = []
    writer = Recorded()
    scorer = SessionScorer(idle_s=idle_s, writer=writer)
    scorer.add_observer(scores.append)
    pipeline = Pipeline(RAGEvaluator(sample_rate=1.0), sessions=scorer)
    collector = Collector(pipeline, None, TraceAssembler(sample_rate=1.0, quiet_s=0.1, ttl_s=30), tick_s=0.05)
    with serving(collector) as url, httpx.Client() as client:
        for i in range(2):
            trace_id, root, child = f"{i + 1:032x}", f"{i + 1:016x}", f"{i + 11:016x}"
            spans = [
                json_span(trace_id, child, root, openinference__span__kind="RETRIEVER", session__id="otlp-chat",
                          **{"retrieval.documents.0.document.content": "Paris is the capital of France."}),
                json_span(trace_id, root, "", input__value=f"Question {i}?", output__value="Paris.",
                          session__id="otlp-chat"),
            ]  # fmt: skip
            response = client.post(
                f"{url}/v1/traces", content=json_request(trace_id, spans), headers={"content-type": "application/json"}
            )
            assert response.status_code == 200
        if idle_s < 1:
            wait_until(lambda: scores, timeout_s=20, what="the session to be scored")
        else:
            wait_until(lambda: scorer.counts["turns_recorded"] == 2, timeout_s=20, what="both turns evaluated")
            assert scores == []
    (score,) = scores
    assert (score.session_id, score.turns, score.tiers) == ("otlp-chat", 2, {"deterministic": 2})
    assert writer.written == scores


def test_a_rules_file_sets_the_failed_sessions_rule(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from ragtriage.alerts import load_rules

    spec = {"rule": [{"type": "failed_sessions", "limit": 0.5, "name": "chats_going_wrong", "min_samples": 3}]}
    scorer = SessionScorer()
    (rule,) = load_rules(spec, session_totals=scorer.totals)
    assert (rule.name, rule.limit, rule.min_samples, rule.read) == ("chats_going_wrong", 0.5, 3, scorer.totals)  # type: ignore[attr-defined]
    assert load_rules(spec) == []  # where no sessions are scored: skipped, said once
    assert "(failed_sessions) skipped" in caplog.text
    with pytest.raises(ValueError, match="limit"):
        load_rules({"rule": [{"type": "failed_sessions", "limit": "high"}]}, session_totals=scorer.totals)

    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('[[rule]]\ntype = "failed_sessions"\nname = "chats_going_wrong"\nlimit = 0.5\n')
    runtime = build(Config(write_back=False, alert_rules_file=str(rules_file)), "app")
    assert runtime.alerts is not None
    names = [r.name for r in runtime.alerts.rules]
    assert "chats_going_wrong" in names and "failed_sessions_high" not in names  # the file's, not a second one


async def test_a_session_that_resumes_after_its_score_is_scored_again_beside_it() -> None:
    scorer = SessionScorer(idle_s=10)
    await scorer.record(turn("back", 0), result("fail"))
    (first,) = await scorer.sweep(now=time.time() + 11)
    await asyncio.sleep(0.01)  # in life, idle_s later
    await scorer.record(turn("back", 1), result("pass"))
    (second,) = await scorer.sweep(now=time.time() + 11)
    ids = {session_annotations(s, "http://p")[0]["identifier"] for s in (first, second, first)}
    assert len(ids) == 2 and (first.failed, second.failed) == (1, 0)
    await scorer.aclose()


# -- closing the open sessions at the end (shutdown, uninstrument, interpreter exit) -----------------------------


class Recorded:
    """A session writer (the plug-in point): keeps what it is given, or hangs, as Phoenix might."""

    def __init__(self, hang_on: frozenset[str] = frozenset()) -> None:
        self.written: list[SessionScore] = []
        self.hang_on = hang_on

    async def write_session(self, score: SessionScore) -> None:
        if score.session_id in self.hang_on:
            await asyncio.sleep(3600)
        self.written.append(score)


async def test_close_open_scores_every_open_session_and_counts_what_missed_the_time() -> None:
    writer = Recorded(hang_on=frozenset({"stuck"}))
    seen: list[str] = []
    scorer = SessionScorer(idle_s=300, writer=writer)
    scorer.add_observer(lambda score: seen.append(score.session_id))
    for name in ("a", "b", "stuck"):
        await scorer.record(turn(name, 0), result("fail" if name == "a" else "pass"))
    await scorer.record(turn("a", 1), result())
    assert await scorer.sweep() == []  # none is idle: only the end closes them
    started = time.monotonic()
    assert await scorer.close_open(0.5) == 1  # "stuck" never returns: given up at the deadline, not waited for
    assert time.monotonic() - started < 5
    assert sorted(s.session_id for s in writer.written) == ["a", "b"]
    assert {s.session_id: (s.turns, s.failed) for s in writer.written} == {"a": (2, 1), "b": (1, 0)}
    assert sorted(seen) == ["a", "b", "stuck"]  # every one closed (metrics), whether it was written or not
    assert scorer.counts["sessions_unwritten_at_close"] == 1 and scorer.totals() == (1, 3)
    assert scorer.store.open_sessions == 0  # type: ignore[attr-defined]
    assert await scorer.close_open(0.5) == 0  # nothing twice
    with pytest.raises(ValueError, match="timeout_s"):
        await scorer.close_open(-1)
    await scorer.aclose()


async def test_close_open_judges_only_within_its_time(judge_server: JudgeServer) -> None:
    llm = LLMJudge(model="m", base_url=judge_server.url, max_retries=0)
    writer = Recorded()
    scorer = SessionScorer(idle_s=300, judge=SessionJudge(llm), writer=writer)
    await scorer.record(turn("quick", 0), result())
    judge_server.default = session_judge_reply
    assert await scorer.close_open(10) == 0
    (quick,) = writer.written
    assert (quick.resolved, quick.resolution_error) == (False, None)

    judge_server.default = Reply('{"resolved": true, "score": 0.9, "reason": "late"}', delay_s=30)
    await scorer.record(turn("slow", 0), result())
    started = time.monotonic()
    assert await scorer.close_open(1.0) == 0  # the judge did not fit: written without its verdict, and says so
    assert time.monotonic() - started < 10
    slow = writer.written[-1]
    assert slow.session_id == "slow" and slow.resolved is None and slow.resolution_score is None
    assert "exit_flush_timeout_s" in (slow.resolution_error or "")
    assert session_annotations(slow, "http://p")[-1]["result"]["label"] == "judge_error"
    assert scorer.counts["session_judge_skipped_at_close"] == 1
    await scorer.aclose()
    await llm.aclose()


@pytest.mark.redis
async def test_close_open_leaves_a_shared_store_to_the_other_workers(redis_server) -> None:
    project = f"p-{uuid.uuid4().hex[:6]}"
    leaving, staying = (
        SessionScorer(store=RedisSessionStore(redis_server.url, project=project), idle_s=5, writer=Recorded())
        for _ in range(2)
    )
    await leaving.record(turn("fleet", 0), result())
    assert await leaving.close_open(1.0) == 0
    assert leaving.writer.written == []  # type: ignore[union-attr]
    (score,) = await staying.sweep(now=time.time() + 6)  # still there, for the worker that stays
    assert (score.session_id, score.turns) == ("fleet", 1)
    for scorer in (leaving, staying):
        await scorer.aclose()


ROOT = Path(__file__).resolve().parents[1]
#: A chat app that ends with two conversations open (idle_s 300: nothing closes them but the end).
CHAT_THAT_JUST_ENDS = textwrap.dedent(
    """
    import sys
    from phoenix.otel import register
    import ragtriage
    from tests.test_sessions import conversation

    url, project = sys.argv[1], sys.argv[2]
    provider = register(endpoint=url + "/v1/traces", project_name=project, verbose=False)  # the global provider
    ragtriage.instrument(sample_rate=1.0, auto_instrument=False, session_idle_s=300)
    conversation(provider, project + "-a")
    conversation(provider, project + "-b", n=2)
    # no shutdown(), no uninstrument(): the script just ends
    """
)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "RAGTRIAGE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.phoenix
def test_a_chat_app_that_just_ends_writes_its_open_sessions(phoenix: PhoenixServer) -> None:
    project = f"sessions-exit-{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, "-c", CHAT_THAT_JUST_ENDS, phoenix.url, project],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "ragtriage" not in done.stderr, done.stderr[-3000:]  # nothing lost
    a = phoenix_session(phoenix, project, project + "-a", timeout_s=5)  # written before the process ended
    b = phoenix_session(phoenix, project, project + "-b", timeout_s=5)
    assert (a["session_failed_share"]["metadata"]["turns"], b["session_failed_share"]["metadata"]["turns"]) == (3, 2)
    assert a["session_failed_share"]["result"]["score"] == 0.0  # every answer is in its context
    assert a["session_tiers"]["result"]["label"] == "deterministic 3"


CHAT_THAT_ENDS_TOO_SOON = textwrap.dedent(
    """
    import asyncio
    from opentelemetry.sdk.trace import TracerProvider
    import ragtriage
    from tests.test_sessions import conversation

    class PhoenixAway:
        async def write(self, sample, result):
            pass

        async def write_session(self, score):
            await asyncio.sleep(30)

        async def aclose(self):
            pass

    provider = TracerProvider()
    ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, auto_instrument=False, writer=PhoenixAway(),
                         session_idle_s=300, exit_flush_timeout_s=1.0)
    conversation(provider, "a")
    conversation(provider, "b", n=2)
    """
)


def test_open_sessions_the_exit_cannot_write_are_one_line_not_a_wait() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CHAT_THAT_ENDS_TOO_SOON], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 25  # each write would take 30 s; the exit gives them 1 s
    lines = [line for line in done.stderr.splitlines() if "ragtriage" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "at exit, 2 open session(s) were not written after waiting 1.0 s" in lines[0], lines
    assert "RAGTRIAGE_EXIT_FLUSH_TIMEOUT_S" in lines[0] and "sample" not in lines[0]
    assert "Traceback" not in done.stderr


GRAPHQL_CONFIGS = """query($id: ID!, $names: [String!]) { node(id: $id) { ... on Project {
  annotationConfigs(first: 10, names: $names) { edges { node { ... on AnnotationConfigBase { name annotationType }
    ... on ContinuousAnnotationConfig { optimizationDirection lowerBound upperBound }
    ... on CategoricalAnnotationConfig { optimizationDirection values { label score } } } } } } } }"""


@pytest.mark.phoenix
def test_shutdown_writes_the_open_sessions_typed_by_their_configs(phoenix: PhoenixServer) -> None:
    project = f"sessions-shutdown-{uuid.uuid4().hex[:6]}"
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False, session_idle_s=300
    )
    try:
        conversation(provider, project)
        assert provider.force_flush(30_000)
        processor = installed_processor()
        assert processor is not None
        processor.shutdown()
        assert processor.stats.get("sessions_lost_at_exit", 0) == 0
        rows = phoenix_session(phoenix, project, project, timeout_s=5)  # written by the time shutdown() returned
        assert rows["session_failed_share"]["metadata"]["turns"] == 3
    finally:
        ragtriage.uninstrument()
        provider.shutdown()
    # the session annotations are typed as the Sessions view reads them: the project's configs, by name
    project_id = httpx.get(f"{phoenix.url}/v1/projects/{project}").json()["data"]["id"]
    response = httpx.post(
        f"{phoenix.url}/graphql",
        json={"query": GRAPHQL_CONFIGS, "variables": {"id": project_id, "names": list(SESSION_ANNOTATIONS)}},
    )
    assert "errors" not in response.json(), response.json()
    configs = {e["node"]["name"]: e["node"] for e in response.json()["data"]["node"]["annotationConfigs"]["edges"]}
    assert set(configs) == set(SESSION_ANNOTATIONS)
    failed_share = configs["session_failed_share"]
    assert (failed_share["annotationType"], failed_share["optimizationDirection"]) == ("CONTINUOUS", "MINIMIZE")
    assert (failed_share["lowerBound"], failed_share["upperBound"]) == (0.0, 1.0)
    assert configs["session_worst_turn"]["optimizationDirection"] == "MAXIMIZE"
    assert configs["session_tiers"]["annotationType"] == "FREEFORM"
    resolved = configs["session_resolved"]
    assert (resolved["annotationType"], resolved["optimizationDirection"]) == ("CATEGORICAL", "MAXIMIZE")
    assert [(v["label"], v["score"]) for v in resolved["values"]] == [
        ("resolved", 1.0), ("unresolved", 0.0), ("judge_error", None)
    ]  # fmt: skip
