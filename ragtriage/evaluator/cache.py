"""Verdict caches: the first tier of the cascade.

A cache is best-effort by contract: a failing cache never fails an evaluation.
:class:`RedisCache` turns connection errors into misses, logs the first one,
counts them all, and stops trying for a short back-off so an unreachable Redis
does not add a connect timeout to every evaluation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from redis.exceptions import RedisError

from ragtriage.redis_connections import LoopLocalRedis, check_redis_url

logger = logging.getLogger(__name__)

#: Bump when the cached payload or the meaning of a score changes.
CACHE_SCHEMA_VERSION = "2"


@runtime_checkable
class Cache(Protocol):
    """Where verdicts are remembered. Both methods must not raise for backend failures."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str) -> None: ...


def cache_key(
    question: str,
    answer: str,
    contexts: Sequence[str],
    judge_fingerprint: str,
    history: Sequence[Mapping[str, str]] = (),
) -> str:
    """Stable across processes and hosts: length-prefixed parts, so no two inputs collide by concatenation.
    The conversation (``history``, as the judges read it) is part of it: one follow-up in two conversations
    asks two things."""
    digest = hashlib.sha256()
    turns = [part for turn in history for part in (turn["role"], turn["content"])]
    for part in (CACHE_SCHEMA_VERSION, judge_fingerprint, question, answer, *contexts, *turns):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    digest.update(len(contexts).to_bytes(8, "big"))
    digest.update(len(history).to_bytes(8, "big"))
    return "ragtriage:v" + CACHE_SCHEMA_VERSION + ":" + digest.hexdigest()


class MemoryCache:
    """In-process LRU with a TTL; the default. Thread-safe, no I/O under its lock."""

    def __init__(self, *, max_entries: int = 10_000, ttl_s: float = 86_400.0) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive int, got {max_entries!r}")
        if not isinstance(ttl_s, int | float) or ttl_s <= 0:
            raise ValueError(f"ttl_s must be a positive number, got {ttl_s!r}")
        self._max = max_entries
        self._ttl = float(ttl_s)
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    async def get(self, key: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= now:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    async def set(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + self._ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self._max}, ttl_s={self._ttl})"


class RedisCache:
    """Shared verdicts across processes and hosts, on ``redis.asyncio``.

    One connection pool per event loop (asyncio connections cannot cross loops).
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: int = 86_400,
        socket_timeout_s: float = 0.5,
        retry_after_failure_s: float = 5.0,
    ) -> None:
        check_redis_url("url", url)
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s < 1:
            raise ValueError(f"ttl_s must be a positive int (seconds), got {ttl_s!r}")
        if not isinstance(socket_timeout_s, int | float) or socket_timeout_s <= 0:
            raise ValueError(f"socket_timeout_s must be > 0, got {socket_timeout_s!r}")
        self._ttl = ttl_s
        self._redis = LoopLocalRedis(url, timeout_s=float(socket_timeout_s))
        self._backoff = float(retry_after_failure_s)
        self._down_until = 0.0
        self._logged_down = False
        self.errors = 0
        """Failed Redis calls (each became a miss or a skipped write)."""

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._down_until = time.monotonic() + self._backoff
        if not self._logged_down:
            self._logged_down = True
            logger.warning(
                "ragtriage: Redis cache unavailable (%s), evaluating uncached: check that redis_url "
                "(RAGTRIAGE_REDIS_URL) names a reachable Redis and its password",
                type(exc).__name__,
            )

    def _available(self) -> bool:
        if time.monotonic() < self._down_until:
            self.errors += 1
            return False
        return True

    async def get(self, key: str) -> str | None:
        if not self._available():
            return None
        try:
            value = await self._redis.client().get(key)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            return None
        self._logged_down = False
        return value if value is None or isinstance(value, str) else value.decode()  # str: decode_responses

    async def set(self, key: str, value: str) -> None:
        if not self._available():
            return
        try:
            await self._redis.client().set(key, value, ex=self._ttl)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)

    async def aclose(self) -> None:
        """Close this loop's pool (call from the loop that used it)."""
        await self._redis.aclose()

    def __repr__(self) -> str:
        # The URL may carry a password: never print it.
        return f"RedisCache(ttl_s={self._ttl})"
