"""Heavy-judge calls through the OpenAI Batch API (#19), against the loopback files and batches endpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ragtriage import LLMJudge
from ragtriage.cli import app
from ragtriage.judges import JudgeError
from ragtriage.judges.batch import BatchJudge
from ragtriage.testing import JudgeServer, Reply, verdict_json

CONTEXTS = ["Paris is the capital of France.", "Berlin is the capital of Germany."]
CLAIMS = [{"claim": "c", "supported": True, "context_index": 1}]
MINI = Path(__file__).parent / "data" / "release_gate_mini.jsonl"
PRICES = {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.60}
FULL = (1000 * 0.15 + 100 * 0.60) / 1e6  # one call's price at the judge's (synchronous) prices


def by_question(body: dict[str, Any]) -> Reply:
    """Faithfulness 0.0N for question N: each answer shows which request it belongs to."""
    n = int(body["messages"][1]["content"].split("question number ", 1)[1].split("?", 1)[0])
    return Reply(verdict_json(faithfulness=n / 100), prompt_tokens=1000, completion_tokens=100)


@pytest.fixture
def openai_server() -> Iterator[JudgeServer]:
    with JudgeServer(default=by_question) as server:
        yield server


def batch_judge(server: JudgeServer, **kwargs: Any) -> BatchJudge:
    inner = LLMJudge(model="gpt-4o-mini", base_url=server.url, api_key="sk-test", max_retries=0, **PRICES)
    return BatchJudge(inner, **{"wait_s": 5.0, "poll_s": 0.02, "gather_s": 0.05, **kwargs})


async def judge_all(judge: BatchJudge, n: int) -> list[Any]:
    calls = [judge.judge(f"What is question number {i}?", "Paris.", CONTEXTS) for i in range(1, n + 1)]
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_calls_that_arrive_together_go_in_one_batch_at_half_price(openai_server: JudgeServer) -> None:
    judge = batch_judge(openai_server)
    verdicts = await judge_all(judge, 10)
    assert [v.output.faithfulness for v in verdicts] == [i / 100 for i in range(1, 11)]  # matched by custom_id
    assert all(v.usage.cost_usd == pytest.approx(FULL / 2) for v in verdicts)
    assert openai_server.requests == [] and len(openai_server.batch.requests) == 10  # nothing synchronous
    assert judge.stats == {"batches": 1, "batched": 10, "answered_by_batch": 10, "synchronous": 0}
    # the uploaded file is what OpenAI documents: one request per line, the same body a synchronous call sends
    (purpose, content), *_ = openai_server.batch.files.values()
    lines = [json.loads(line) for line in content.decode().splitlines()]
    assert purpose == "batch" and len({line["custom_id"] for line in lines}) == 10
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    body = lines[0]["body"]
    assert body == judge.inner.request_body(body["messages"], verify_claims=False, temperature=0.0)
    assert f"${10 * FULL / 2:.6f}" in judge.note() and "0 judged synchronously" in judge.note()
    await judge.aclose()


async def test_at_the_wait_limit_the_batch_is_cancelled_and_its_calls_run_synchronously(
    openai_server: JudgeServer,
) -> None:
    openai_server.batch.polls = None  # never ends
    judge = batch_judge(openai_server, wait_s=0.3)
    verdicts = await judge_all(judge, 6)
    assert [v.output.faithfulness for v in verdicts] == [i / 100 for i in range(1, 7)]
    assert all(v.usage.cost_usd == pytest.approx(FULL) for v in verdicts)  # full price: not done by a batch
    assert openai_server.batch.cancelled == ["batch_1"] and len(openai_server.requests) == 6
    assert judge.stats["synchronous"] == 6 and judge.stats["answered_by_batch"] == 0
    await judge.aclose()


async def test_lines_in_the_error_file_are_judged_synchronously(openai_server: JudgeServer) -> None:
    seen: set[int] = set()

    def flaky(body: dict[str, Any]) -> Reply:
        reply = by_question(body)
        n = round(json.loads(reply.content or "{}")["faithfulness"] * 100)
        if n % 3 == 0 and n not in seen:  # the first answer to every third question is a server error
            seen.add(n)
            return Reply(status=500, body='{"error": {"message": "internal"}}')
        return reply

    openai_server.default = flaky
    judge = batch_judge(openai_server)
    verdicts = await judge_all(judge, 9)
    assert [v.output.faithfulness for v in verdicts] == [i / 100 for i in range(1, 10)]
    assert judge.stats["answered_by_batch"] == 6 and judge.stats["synchronous"] == 3
    assert sorted(round(v.usage.cost_usd, 12) for v in verdicts) == sorted([round(FULL / 2, 12)] * 6 + [FULL] * 3)
    batch = openai_server.batch.batches["batch_1"]
    assert batch["request_counts"] == {"total": 9, "completed": 6, "failed": 3} and batch["error_file_id"]
    await judge.aclose()


@pytest.mark.parametrize("outcome", ["failed", "expired"])
async def test_a_batch_that_fails_or_expires_falls_back_to_synchronous_calls(
    openai_server: JudgeServer, outcome: str
) -> None:
    openai_server.batch.outcome = outcome
    judge = batch_judge(openai_server)
    verdicts = await judge_all(judge, 4)
    assert [v.output.faithfulness for v in verdicts] == [0.01, 0.02, 0.03, 0.04]
    assert len(openai_server.requests) == 4 and judge.stats["synchronous"] == 4
    await judge.aclose()


async def test_an_invalid_batch_answer_is_a_judge_error_not_a_score(openai_server: JudgeServer) -> None:
    openai_server.default = Reply("I would rate this 0.9.", prompt_tokens=1000, completion_tokens=100)
    judge = batch_judge(openai_server)
    (error,) = await judge_all(judge, 1)
    assert isinstance(error, JudgeError) and "no JSON object" in error.reason
    assert error.usage.cost_usd == pytest.approx(FULL / 2)  # it was answered, at batch price
    assert openai_server.requests == []  # a bad answer is not retried into a lucky one
    await judge.aclose()


def test_batch_judge_arguments() -> None:
    inner = LLMJudge(model="m", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(TypeError, match="judge"):
        BatchJudge(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wait_s"):
        BatchJudge(inner, wait_s=0)
    with pytest.raises(ValueError, match="one server"):
        BatchJudge(LLMJudge(model="m", base_url=["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]))


def ci(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["ci", "--dataset", str(MINI), "--n", "8", "--adversarial-share", "0", "--json", str(report), *args]
    )
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(report.read_text()), result.output


def test_ci_batch_runs_the_heavy_judge_through_the_batch_api(tmp_path: Path) -> None:
    reply = Reply(verdict_json(faithfulness=1.0, claims=CLAIMS), prompt_tokens=1000, completion_tokens=100)
    args = ("--batch", "--batch-poll", "0.05s", "--min-pass-rate", "0.5")
    with JudgeServer(default=reply) as heavy:
        code, batched, _ = ci(tmp_path, "--heavy-judge-url", heavy.url, *args)
        in_batches, synchronous = len(heavy.batch.requests), len(heavy.requests)
    with JudgeServer(default=reply) as heavy:
        _, plain, _ = ci(tmp_path, "--heavy-judge-url", heavy.url)
        assert heavy.batch.requests == [] and len(heavy.requests) == in_batches
    assert code == 0 and in_batches == 7 and synchronous == 0  # the 7 items the free tiers leave undecided
    assert batched["counts"] == plain["counts"]  # the same verdicts
    assert batched["cost_usd"] == pytest.approx(plain["cost_usd"] / 2) == pytest.approx(7 * FULL / 2)
    assert any("7 call(s) in 1 batch(es); 7 answered by a batch at batch prices" in n for n in batched["notes"])


def test_calibrate_batch(tmp_path: Path) -> None:
    reply = Reply(verdict_json(faithfulness=1.0, claims=CLAIMS), prompt_tokens=1000, completion_tokens=100)
    with JudgeServer(default=reply) as heavy:
        result = CliRunner().invoke(
            app,
            ["calibrate", "--labels", str(MINI), "-o", str(tmp_path / "c.json"), "--heavy-judge-url", heavy.url,
             "--batch", "--batch-poll", "0.05s"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert len(heavy.batch.requests) == 8 and heavy.requests == []
    assert "8 call(s) in 1 batch(es); 8 answered by a batch" in " ".join(result.output.split())


def test_batch_needs_a_heavy_judge(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ci", "--dataset", str(MINI), "--batch"])
    assert result.exit_code == 2 and "--batch needs a heavy judge" in result.output
