"""Real servers for the tests: a loopback judge, a redis-server. Nothing of ragtriage is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
