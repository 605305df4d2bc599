"""Fleet-wide alerts: every worker feeds one window in Redis, one worker at a time judges it.

Observations go to a capped Redis Stream; the rules' lifecycle state (firing,
last sent, severity) lives in a Redis hash; a lock with a TTL makes sure one
worker evaluates at a time. So a fleet of N workers fires an alert once, not N
times, and a worker that dies does not take the alert state with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import asdict

from redis.exceptions import RedisError

from ragtriage.alerts.manager import AlertManager, _RuleState
from ragtriage.alerts.rules import Observation
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.redis_connections import LoopLocalRedis, check_redis_url

logger = logging.getLogger(__name__)

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class SharedAlerts:
    """Wraps an :class:`AlertManager` so its window and state are the fleet's, kept in Redis."""

    def __init__(
        self,
        manager: AlertManager,
        url: str,
        *,
        prefix: str = "ragtriage:alerts",
        every_s: float = 1.0,
        max_observations: int = 10_000,
    ) -> None:
        check_redis_url("url", url)
        self.manager = manager
        self._prefix = f"{prefix}:{manager.project}"
        self._every = every_s
        self._max = max_observations
        self._redis = LoopLocalRedis(url, timeout_s=2.0)
        self._token = uuid.uuid4().hex
        self._last = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(self, result: RAGEvaluationResult) -> None:
        """An evaluator observer: queue the observation for Redis and, now and then, a fleet-wide check."""
        task = asyncio.get_running_loop().create_task(self._observe(Observation.of(result, time.time())))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _observe(self, observation: Observation) -> None:
        try:
            await self._redis.client().xadd(
                f"{self._prefix}:obs", {"o": json.dumps(asdict(observation))}, maxlen=self._max, approximate=True
            )
            now = time.monotonic()
            if now - self._last >= self._every:
                self._last = now
                await self.tick()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.manager.counts["shared_window_errors"] += 1
            logger.debug("ragtriage: shared alert window unavailable: %r", exc)

    async def tick(self) -> int:
        """If no other worker is evaluating, run the rules on the fleet's window; returns events sent."""
        client = self._redis.client()
        lock = f"{self._prefix}:lock"
        if not await client.set(lock, self._token, nx=True, px=10_000):
            return 0
        try:
            longest = max((r.window_size for r in self.manager.rules), default=1)
            rows = await client.xrevrange(f"{self._prefix}:obs", count=2 * longest)
            observations = [Observation(**json.loads(fields["o"])) for _, fields in reversed(rows)]
            stored = await client.hgetall(f"{self._prefix}:state")
            manager = self.manager
            with manager._lock:
                manager._observations = deque(observations, maxlen=2 * longest)
                for name in manager._state:
                    if name in stored:
                        manager._state[name] = _RuleState(**json.loads(stored[name]))
            events = manager.evaluate(time.time())
            state = {name: json.dumps(asdict(s)) for name, s in manager._state.items()}
            if state:
                await client.hset(f"{self._prefix}:state", mapping=state)
            for event in events:
                manager.dispatch(event)
            return len(events)
        finally:
            await client.eval(_RELEASE, 1, lock, self._token)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.manager.flush()
        await self._redis.aclose()
