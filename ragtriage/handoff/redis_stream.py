r"""The ``evaluate_in="queue"`` hand-off: a Redis Stream between the app and ``ragtriage worker``\ s. Both ends.

The app's end, :class:`StreamPublisher`, a sample handler: ``XADD`` with an approximate ``MAXLEN`` cap, on
the span processor's background thread (or the collector's loop), never the app's thread.

The consuming end, :class:`StreamWorker`, runs the same :class:`~ragtriage.pipeline.Pipeline` as the
in-process path (``ragtriage worker`` builds it), through the hand-offs' one bounded consumer, so a
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
from typing import cast

from redis.exceptions import RedisError, ResponseError

from ragtriage.errors import WriteBackFailed
from ragtriage.handoff.consumer import BoundedConsumer
from ragtriage.pipeline import Pipeline, SampleHandler
from ragtriage.redis_connections import LoopLocalRedis, check_redis_url
from ragtriage.sample import DEFAULT_STREAM, STREAM_FIELD, RAGSample

logger = logging.getLogger(__name__)


DEFAULT_GROUP = "ragtriage-workers"
#: One stream entry as read: its id, its fields, how often it was delivered.
Entry = tuple[str, dict[str, str], int]


class StreamPublisher(SampleHandler):
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
        # No queue beyond the slots: entries are read only when there is room to evaluate them, since a read
        # entry is pending (and its idle time counts towards a reclaim) until it is acknowledged.
        consumer: BoundedConsumer[Entry] = BoundedConsumer(
            self._handle, max_queue_size=self._concurrency, concurrency=self._concurrency
        )
        running = asyncio.create_task(consumer.run())
        failures = 0
        group_ready = False
        reclaim_every = max(0.05, min(self._claim_idle_ms / 2000, 5.0))
        heartbeat_every = self._claim_idle_ms / 3000
        last_reclaim = last_heartbeat = 0.0
        while not stop.is_set():
            free = await consumer.slots(heartbeat_every)  # every slot busy: wait for one, no polling
            if free == 0:
                with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                    last_heartbeat = time.monotonic()
                    await self._heartbeat()
                continue
            try:
                if not group_ready:
                    await self._ensure_group()
                    group_ready = True
                if self._active and time.monotonic() - last_heartbeat >= heartbeat_every:
                    last_heartbeat = time.monotonic()
                    await self._heartbeat()
                entries: list[Entry] = []
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
            for entry in entries:
                self._active.add(entry[0])
                consumer.offer(entry)
            consumer.wake()
        consumer.stop()
        await running
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

    async def _read(self, count: int) -> list[Entry]:
        try:
            response = await self._redis.client().xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=self._block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise _GroupMissing from None
            raise
        streams = cast("list[tuple[str, list[tuple[str, dict[str, str]]]]]", response or [])  # decode_responses
        return [(entry_id, fields, 1) for _, messages in streams for entry_id, fields in messages]

    async def _reclaim(self, count: int) -> list[Entry]:
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
        entries: list[Entry] = []
        for entry_id, fields in claimed:
            if entry_id in self._active:  # ours and still running (its heartbeat came late)
                continue
            if fields is None:  # deleted from the stream (MAXLEN trimmed it) while pending
                await client.xack(self.stream, self.group, entry_id)
                self.counts["trimmed_while_pending"] += 1
                continue
            pending = await client.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            entries.append((entry_id, fields, deliveries))
            self.counts["reclaimed"] += 1
        return entries

    async def _handle(self, entry: Entry) -> None:
        entry_id, fields, deliveries = entry
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
