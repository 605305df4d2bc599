"""Real servers for the tests: a loopback judge, a redis-server. Nothing of ragtriage is mocked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from ragtriage import LLMJudge, RAGEvaluator
from ragtriage.testing import JudgeServer
from ragtriage.testing.redis_server import RedisServer


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    with JudgeServer() as server:
        yield server


@pytest.fixture
def heavy_server() -> Iterator[JudgeServer]:
    with JudgeServer() as server:
        yield server


@pytest.fixture
async def make(judge_server: JudgeServer, heavy_server: JudgeServer) -> AsyncIterator[Callable[..., RAGEvaluator]]:
    """Builds evaluators over the loopback vLLM (``judge_server``) and OpenAI (``heavy_server``) stand-ins,
    and closes their connections after the test."""
    built: list[RAGEvaluator] = []

    def build(*, local: bool = True, heavy: bool = True, local_retries: int = 0, **kwargs: object) -> RAGEvaluator:
        local_judge = LLMJudge(
            model="llama-3.1-8b", base_url=judge_server.url, structured_output="vllm", max_retries=local_retries,
            timeout_s=5,
        )  # fmt: skip
        heavy_judge = LLMJudge(
            model="gpt-4o-mini", base_url=heavy_server.url, input_usd_per_1m=0.15, output_usd_per_1m=0.6,
            max_retries=0, timeout_s=5,
        )  # fmt: skip
        evaluator = RAGEvaluator(
            sample_rate=1.0,
            local_judge=local_judge if local else None,
            heavy_judge=heavy_judge if heavy else None,
            **kwargs,  # type: ignore[arg-type]
        )
        built.append(evaluator)
        return evaluator

    yield build
    for evaluator in built:
        await evaluator.aclose()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with an fsync-always append-only file: a restart keeps the stream."""
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory):
    """One real `phoenix serve` for the session (startup takes 15-20 s)."""
    from ragtriage.testing.phoenix import PhoenixServer

    server = PhoenixServer(tmp_path_factory.mktemp("phoenix"))
    server.start()
    yield server
    server.stop()
