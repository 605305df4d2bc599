"""Where an :class:`~ragtriage.alerts.AlertManager` keeps its window of observations and its rules' lifecycle.

In one process that is memory (:class:`MemoryAlertState`). A fleet of ``ragtriage worker``\\ s shares one
window in Redis (:class:`RedisAlertState`), so N workers fire an alert once, not N times, and a worker that
dies does not take the alert state with it. The manager only ever talks to this small interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from typing import Protocol, cast, runtime_checkable

from redis.exceptions import RedisError

from ragtriage.alerts.rules import Observation
from ragtriage.redis_connections import LoopLocalRedis, check_redis_url

logger = logging.getLogger(__name__)


@dataclass
class RuleState:
    """One rule's lifecycle: is it firing, when was it last sent, at what severity."""

    firing: bool = False
    last_sent: float = 0.0
    severity: str = ""


@dataclass
class Turn:
    """What a manager judges in one turn: the window, and the rules' states (changes are saved on exit)."""

    observations: list[Observation]
    rules: dict[str, RuleState]


@runtime_checkable
class AlertState(Protocol):
    """A window of observations plus per-rule states, with turns: at most one judge of the window at a time."""

    def record(self, observation: Observation, keep: int) -> None:
        """Add an observation, keeping at least the last ``keep``. No waiting on I/O: it runs per result."""
        ...

    def turn(self, rules: Iterable[str], keep: int) -> contextlib.AbstractAsyncContextManager[Turn | None]:
        """The window and states to judge now, or ``None`` when another process is judging them."""
        ...

    async def aclose(self) -> None: ...


class MemoryAlertState:
    """This process's window and states."""

    def __init__(self) -> None:
        self._observations: deque[Observation] = deque(maxlen=1)
        self._rules: dict[str, RuleState] = {}
        self.counts: Counter[str] = Counter()

    def record(self, observation: Observation, keep: int) -> None:
        if keep > (self._observations.maxlen or 0):
            self._observations = deque(self._observations, maxlen=keep)
        self._observations.append(observation)

    @contextlib.asynccontextmanager
    async def turn(self, rules: Iterable[str], keep: int) -> AsyncIterator[Turn | None]:
        for name in rules:
            self._rules.setdefault(name, RuleState())
        yield Turn(list(self._observations)[-keep:], self._rules)

    async def aclose(self) -> None:
        return None


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class RedisAlertState:
    """The fleet's window and states in Redis, under ``{prefix}:{project}``.

    Observations go to a capped Redis Stream; rule states live in a hash; a lock with a TTL lets one
    process judge at a time. Redis unavailable: observations are dropped and counted
    (``shared_window_errors``), never raised into an evaluation.
    """

    def __init__(
        self, url: str, *, project: str = "default", prefix: str = "ragtriage:alerts", max_observations: int = 10_000
    ) -> None:
        check_redis_url("url", url)
        self._key = f"{prefix}:{project}"
        self._max = max_observations
        self._redis = LoopLocalRedis(url, timeout_s=2.0)
        self._token = uuid.uuid4().hex
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()

    def record(self, observation: Observation, keep: int) -> None:
        task = asyncio.get_running_loop().create_task(self._record(observation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, observation: Observation) -> None:
        try:
            await self._redis.client().xadd(
                f"{self._key}:obs", {"o": json.dumps(asdict(observation))}, maxlen=self._max, approximate=True
            )
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.counts["shared_window_errors"] += 1
            logger.debug("ragtriage: shared alert window unavailable: %r", exc)

    @contextlib.asynccontextmanager
    async def turn(self, rules: Iterable[str], keep: int) -> AsyncIterator[Turn | None]:
        if self._tasks:  # this process's own observations first
            await asyncio.gather(*self._tasks, return_exceptions=True)
        client = self._redis.client()
        lock = f"{self._key}:lock"
        try:
            mine = await client.set(lock, self._token, nx=True, px=10_000)
        except (RedisError, OSError, asyncio.TimeoutError):
            self.counts["shared_window_errors"] += 1
            mine = False
        if not mine:
            yield None
            return
        try:
            # decode_responses=True: ids, field names and values are str
            rows = cast("list[tuple[str, dict[str, str]]]", await client.xrevrange(f"{self._key}:obs", count=keep))
            stored = cast("dict[str, str]", await client.hgetall(f"{self._key}:state"))
            turn = Turn(
                [Observation(**json.loads(fields["o"])) for _, fields in reversed(rows)],
                {name: RuleState(**json.loads(stored[name])) if name in stored else RuleState() for name in rules},
            )
            yield turn
            if turn.rules:
                await client.hset(
                    f"{self._key}:state", mapping={n: json.dumps(asdict(s)) for n, s in turn.rules.items()}
                )
        finally:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await client.eval(_RELEASE, 1, lock, self._token)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()
