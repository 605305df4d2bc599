"""evaluate_in="process": samples cross a pipe to a real child interpreter that judges and writes back."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

import ragtriage
from ragtriage import EvalSpanProcessor
from ragtriage.handoff.child_process import ProcessHandler
from ragtriage.instrumentation.instrument import installed_processor
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer
from tests.test_phoenix import annotations, app_provider
from tests.test_phoenix import rag_request as phoenix_rag_request
from tests.test_span_processor import rag_request
from tests.test_streams import wait_until

CHILD = [sys.executable, "-m", "ragtriage.instrumentation.evaluator_process"]


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    tp = TracerProvider()
    yield tp
    tp.shutdown()


def child_processor(provider: TracerProvider, judge: JudgeServer, **handler_kwargs: object):
    env = {**os.environ, "RAGTRIAGE_LOCAL_JUDGE_URL": judge.url, "RAGTRIAGE_WRITE_BACK": "false"}
    handler = ProcessHandler(CHILD, env=env, **handler_kwargs)  # type: ignore[arg-type]
    processor = EvalSpanProcessor(handler, sample_rate=1.0)
    provider.add_span_processor(processor)
    return processor, handler


@pytest.mark.phoenix
def test_instrument_evaluates_in_a_child_that_writes_back_to_phoenix(
    phoenix: PhoenixServer, judge_server: JudgeServer
) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.35))
    project = "evaluate-in-process"
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider,
        endpoint=phoenix.url,
        sample_rate=1.0,
        evaluate_in="process",
        local_judge_url=judge_server.url,  # an explicit setting: reaches the child through its environment
        auto_instrument=False,
    )
    processor = installed_processor()
    assert processor is not None
    handler = processor.handler
    try:
        _, root_span_id, _ = phoenix_rag_request(provider)
        provider.force_flush()
        assert processor.force_flush(60_000)
        assert processor.stats["child_ok"] == 1 and processor.stats["child_starts"] == 1
        assert isinstance(handler, ProcessHandler) and handler.pid not in (None, os.getpid())
        child_pid = handler.pid
        # The app's process has no evaluator at all: the judge's verdict on the trace came from the child.
        assert len(judge_server.requests) >= 1 and "evaluations_ok" not in processor.stats
        rows = annotations(phoenix, project, root_span_id)
        assert rows["faithfulness"]["result"]["score"] == pytest.approx(0.35)
        assert rows["eval_tier"]["result"]["label"] in ("local", "heavy")
    finally:
        ragtriage.uninstrument()
    with pytest.raises(ProcessLookupError):  # the child finished and exited with its parent's shutdown
        os.kill(child_pid, 0)


def test_a_killed_child_loses_only_what_it_held_and_a_new_one_takes_over(
    provider: TracerProvider, judge_server: JudgeServer
) -> None:
    gate = threading.Event()
    judge_server.default = Reply(verdict_json(), block=gate)
    processor, handler = child_processor(provider, judge_server, restart_after_s=0)
    try:
        for _ in range(3):
            rag_request(provider)  # returns at once although the child's judge is stuck
        wait_until(lambda: judge_server.in_flight == 3, 30, "3 judge calls in flight")
        assert processor.force_flush(200) is False
        first = handler.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert processor.force_flush(30_000)
        assert processor.stats["child_lost"] == 3 and "child_ok" not in processor.stats
    finally:
        gate.set()
    judge_server.default = Reply(verdict_json())
    rag_request(provider)
    rag_request(provider, answer="Paris is the capital of France \udce9.")  # not UTF-8: a lone surrogate
    assert processor.force_flush(60_000)
    stats = processor.stats
    assert stats["child_starts"] == 2 and stats["child_ok"] == 2 and handler.pid not in (None, first)
    processor.shutdown()
    assert handler.pid is None


def test_a_child_that_cannot_start_is_counted_not_raised(provider: TracerProvider) -> None:
    handler = ProcessHandler(["/nonexistent/python"], restart_after_s=60)
    processor = EvalSpanProcessor(handler, sample_rate=1.0)
    provider.add_span_processor(processor)
    for _ in range(3):
        rag_request(provider)
    assert processor.force_flush(10_000)
    assert processor.stats["child_dropped"] == 3 and "child_starts" not in processor.stats


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"command": "python -m x"}, TypeError, "command"),
        ({"command": []}, TypeError, "command"),
        ({"command": CHILD, "restart_after_s": -1}, ValueError, "restart_after_s"),
        ({"command": CHILD, "shutdown_timeout_s": "1"}, ValueError, "shutdown_timeout_s"),
    ],
)
def test_handler_arguments_are_checked(kwargs: dict, error: type[Exception], named: str) -> None:
    with pytest.raises(error, match=named):
        ProcessHandler(**kwargs)


def test_a_forked_app_process_gets_its_own_child(
    provider: TracerProvider, judge_server: JudgeServer, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    processor, handler = child_processor(provider, judge_server, shutdown_timeout_s=20)
    rag_request(provider)
    assert processor.force_flush(60_000) and processor.stats["child_ok"] == 1
    parents_child = handler.pid
    out = tmp_path / "fork.json"
    hold_read, hold_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked app process: evaluates its own trace, then stays alive until told to go
        code = 1
        try:
            os.close(hold_write)
            rag_request(provider)
            ok = processor.force_flush(60_000)
            out.write_text(json.dumps({"ok": ok, "stats": processor.stats, "child": handler.pid}))
            os.read(hold_read, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(hold_read)
    try:
        wait_until(out.exists, 30, "the forked process's report")
        wait_until(lambda: out.read_text().endswith("}"), 30, "the whole report")
        forked = json.loads(out.read_text())
        assert forked["ok"] and forked["stats"]["child_ok"] == 1 and forked["stats"]["child_starts"] == 1
        assert forked["child"] not in (None, parents_child)
        assert handler.pid == parents_child and processor.stats["child_ok"] == 1  # the parent's side is untouched
        # The forked process is still alive; had it kept its copy of the pipe, the parent's child would never
        # see EOF and would be killed after shutdown_timeout_s.
        with caplog.at_level("WARNING", logger="ragtriage"):
            processor.shutdown()
        assert handler.pid is None and "killing it" not in caplog.text
    finally:
        os.close(hold_write)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_broken_rules_file_fails_instrument_not_every_child(tmp_path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("this is = = not toml")
    with pytest.raises(ValueError, match="not valid TOML"):
        ragtriage.instrument(
            tracer_provider=TracerProvider(), evaluate_in="process", alert_rules_file=str(rules), auto_instrument=False
        )
    assert installed_processor() is None
