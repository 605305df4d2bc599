r"""The ``evaluate_in="queue"`` handler: publish each sample to the Redis Stream that ``ragtriage worker``\ s consume.

It runs on the span processor's background thread, never the app's thread: ``XADD`` with an
approximate ``MAXLEN`` cap. The consumer side is :mod:`ragtriage.handoff.redis_stream`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from redis.exceptions import RedisError

from ragtriage.redis_connections import LoopLocalRedis, check_redis_url
from ragtriage.sample import DEFAULT_STREAM, STREAM_FIELD, RAGSample

logger = logging.getLogger(__name__)


class StreamPublisher:
    """A span-processor handler that queues samples instead of evaluating them.

    Redis unreachable: the sample is dropped and counted (``dropped``), the
    first failure is logged, and publishing pauses for ``retry_after_failure_s``
    so a dead Redis does not cost a timeout per sample.
    """

    stats_prefix = "queue_"

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        maxlen: int = 100_000,
        timeout_s: float = 1.0,
        retry_after_failure_s: float = 2.0,
    ) -> None:
        check_redis_url("queue", url)
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen must be a positive int, got {maxlen!r}")
        self.stream = stream
        self._maxlen = maxlen
        self._redis = LoopLocalRedis(url, timeout_s=timeout_s)
        self._backoff = retry_after_failure_s
        self._down_until = 0.0
        self._logged = False
        self.counts: Counter[str] = Counter()

    async def __call__(self, sample: RAGSample) -> None:
        if time.monotonic() < self._down_until:
            self.counts["dropped"] += 1
            return
        try:
            await self._redis.client().xadd(
                self.stream, {STREAM_FIELD: sample.to_json()}, maxlen=self._maxlen, approximate=True
            )
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.counts["dropped"] += 1
            self._down_until = time.monotonic() + self._backoff
            if not self._logged:
                self._logged = True
                logger.warning("ragtriage: queue unreachable, dropping samples (%s)", type(exc).__name__)
            return
        self._logged = False
        self.counts["published"] += 1

    async def aclose(self) -> None:
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"StreamPublisher(stream={self.stream!r}, maxlen={self._maxlen})"
