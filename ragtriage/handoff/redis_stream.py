"""``ragtriage worker``: a consumer of the sample stream that evaluates and writes back.

It runs the same :class:`~ragtriage.pipeline.Pipeline` as the in-process path, so a
sample is judged and written back identically wherever it is evaluated. Write-back is
idempotent (Phoenix annotations are upserted under the sample id), which makes
at-least-once delivery safe:

* an entry is acknowledged only after its write-back succeeded;
* entries pending longer than ``claim_idle_s`` (their consumer died) are
  taken over with ``XAUTOCLAIM``;
* an entry delivered ``max_deliveries`` times, or one that cannot be decoded,
  goes to the dead-letter stream with the reason, then is acknowledged;
* Redis going away is waited out with back-off; a lost consumer group is
  created again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter

from redis.exceptions import RedisError, ResponseError

from ragtriage.errors import WriteBackFailed
from ragtriage.pipeline import Pipeline
from ragtriage.redis_connections import LoopLocalRedis, check_redis_url
from ragtriage.sample import DEFAULT_STREAM, STREAM_FIELD, RAGSample

logger = logging.getLogger(__name__)


DEFAULT_GROUP = "ragtriage-workers"


def dead_letter_stream(stream: str) -> str:
    """Where entries that cannot be evaluated go, with the reason."""
    return f"{stream}:dead"


class _GroupMissing(Exception):
    """The consumer group is gone (Redis restarted without persistence)."""


class StreamWorker:
    """Consumes ``stream`` in consumer group ``group`` with at most ``concurrency`` samples in flight."""

    def __init__(
        self,
        pipeline: Pipeline,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        concurrency: int = 8,
        claim_idle_s: float = 30.0,
        max_deliveries: int = 3,
        block_ms: int = 500,
    ) -> None:
        check_redis_url("queue", url)
        for name, value in (("concurrency", concurrency), ("max_deliveries", max_deliveries), ("block_ms", block_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(claim_idle_s, int | float) or claim_idle_s <= 0:
            raise ValueError(f"claim_idle_s must be > 0, got {claim_idle_s!r}")
        self.pipeline = pipeline
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_letter = dead_letter_stream(stream)
        self._concurrency = concurrency
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._max_deliveries = max_deliveries
        self._block_ms = block_ms
        self._redis = LoopLocalRedis(url, timeout_s=max(5.0, block_ms / 1000 + 2))
        self._active: set[str] = set()
        self.counts: Counter[str] = Counter()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish what is in flight (unfinished entries stay pending
        and are reclaimed by another worker)."""
        in_flight: set[asyncio.Task[None]] = set()
        failures = 0
        group_ready = False
        reclaim_every = max(0.05, min(self._claim_idle_ms / 2000, 5.0))
        heartbeat_every = self._claim_idle_ms / 3000
        last_reclaim = last_heartbeat = 0.0
        while not stop.is_set():
            if len(in_flight) >= self._concurrency:  # every slot busy: wait for one, no polling
                await asyncio.wait(in_flight, timeout=heartbeat_every, return_when=asyncio.FIRST_COMPLETED)
                if len(in_flight) >= self._concurrency:
                    with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                        last_heartbeat = time.monotonic()
                        await self._heartbeat()
                continue
            free = self._concurrency - len(in_flight)
            try:
                if not group_ready:
                    await self._ensure_group()
                    group_ready = True
                if self._active and time.monotonic() - last_heartbeat >= heartbeat_every:
                    last_heartbeat = time.monotonic()
                    await self._heartbeat()
                entries: list[tuple[str, dict[str, str], int]] = []
                if time.monotonic() - last_reclaim >= reclaim_every:
                    last_reclaim = time.monotonic()
                    entries = await self._reclaim(free)
                if len(entries) < free:
                    entries += await self._read(free - len(entries))
                failures = 0
            except _GroupMissing:  # Redis restarted without the group: create it again
                group_ready = False
                continue
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                group_ready = False
                failures += 1
                self.counts["redis_errors"] += 1
                if failures == 1:
                    logger.warning("ragtriage worker: Redis unavailable (%s); retrying", type(exc).__name__)
                await _sleep_or_stop(stop, min(0.1 * 2**failures, 5.0))
                continue
            for entry_id, fields, deliveries in entries:
                self._active.add(entry_id)
                task = asyncio.create_task(self._handle(entry_id, fields, deliveries))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        await self._redis.aclose()

    async def _heartbeat(self) -> None:
        """Reset the idle time of entries still being evaluated here, so no other worker takes them over
        while this one is alive (XCLAIM to ourselves, JUSTID: the delivery count is not raised)."""
        await self._redis.client().xclaim(
            self.stream, self.group, self.consumer, min_idle_time=0, message_ids=list(self._active), justid=True
        )

    async def _ensure_group(self) -> None:
        try:
            await self._redis.client().xgroup_create(self.stream, self.group, id="0", mkstream=True)
            self.counts["groups_created"] += 1
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, count: int) -> list[tuple[str, dict[str, str], int]]:
        try:
            response = await self._redis.client().xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=self._block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise _GroupMissing from None
            raise
        return [(entry_id, fields, 1) for _, messages in response or () for entry_id, fields in messages]

    async def _reclaim(self, count: int) -> list[tuple[str, dict[str, str], int]]:
        if count <= 0:
            return []
        client = self._redis.client()
        try:
            _, claimed, *_ = await client.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_time=self._claim_idle_ms, start_id="0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise _GroupMissing from None
            raise
        entries = []
        for entry_id, fields in claimed:
            if entry_id in self._active:  # ours and still running (its heartbeat came late)
                continue
            if fields is None:  # deleted from the stream (MAXLEN trimmed it) while pending
                await client.xack(self.stream, self.group, entry_id)
                self.counts["trimmed_while_pending"] += 1
                continue
            pending = await client.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            deliveries = pending[0]["times_delivered"] if pending else 1
            entries.append((entry_id, fields, deliveries))
            self.counts["reclaimed"] += 1
        return entries

    async def _handle(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        try:
            await self._process_entry(entry_id, fields, deliveries)
        finally:
            self._active.discard(entry_id)

    async def _process_entry(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        try:
            try:
                sample = RAGSample.from_json(fields[STREAM_FIELD])
            except (KeyError, ValueError) as exc:
                await self._dead_letter(entry_id, fields, deliveries, f"undecodable: {exc}")
                return
            if deliveries > self._max_deliveries:
                await self._dead_letter(entry_id, fields, deliveries, f"failed {deliveries - 1} times")
                return
            try:
                await self.pipeline(sample)
            except WriteBackFailed as exc:
                self.counts["retry_later"] += 1
                if deliveries >= self._max_deliveries:
                    await self._dead_letter(entry_id, fields, deliveries, f"write-back failed: {exc}")
                return  # left pending: reclaimed after claim_idle_s, by this or another worker
            except Exception as exc:
                self.counts["retry_later"] += 1
                logger.exception("ragtriage worker: evaluating %s failed", entry_id)
                if deliveries >= self._max_deliveries:
                    await self._dead_letter(entry_id, fields, deliveries, f"{type(exc).__name__}: {exc}")
                return
            await self._redis.client().xack(self.stream, self.group, entry_id)
            self.counts["acked"] += 1
        except (RedisError, OSError, asyncio.TimeoutError):
            self.counts["redis_errors"] += 1  # not acked: it stays pending and is redelivered

    async def _dead_letter(self, entry_id: str, fields: dict[str, str], deliveries: int, reason: str) -> None:
        client = self._redis.client()
        await client.xadd(
            self.dead_letter,
            {
                "entry_id": entry_id,
                "reason": reason[:2000],
                "deliveries": str(deliveries),
                STREAM_FIELD: fields.get(STREAM_FIELD, ""),
            },
        )
        await client.xack(self.stream, self.group, entry_id)
        self.counts["dead_lettered"] += 1
        logger.warning("ragtriage worker: %s moved to %s: %s", entry_id, self.dead_letter, reason)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
