"""The one bounded consumer behind every hand-off: a queue in, at most N items in flight, drops counted.

As the OpenTelemetry SDK keeps one ``BatchProcessor`` behind ``BatchSpanProcessor`` and its log counterpart,
ragtriage keeps this one loop behind the span processor's background thread, the collector, the evaluator
process and ``ragtriage worker``. What they put in differs (a completed trace, an assembled sample, a line
from the pipe, a stream entry); taking it out does not:

* :meth:`BoundedConsumer.offer` never blocks and never raises: past ``max_queue_size`` the item is dropped
  and counted. It is safe from any thread (``deque.append`` is atomic); it does not wake the loop, which
  polls every ``poll_s`` (a wake-up per item costs the app's thread a syscall and a GIL hand-off);
  :meth:`wake` does, for callers that want the item taken at once.
* :meth:`run` keeps at most ``concurrency`` items in flight, one task per slot that works off the queue,
  or one task per poll with ``process_batch``; a failure is the item's own (``WriteBackFailed`` was counted
  where it happened; anything else goes to ``on_error``) and never stops the loop.
* :meth:`slots` lets a source that pulls (a pipe, a Redis Stream) take only what there is room for.
* :meth:`flush` (from another thread) and :meth:`drain` (on the loop) wait until nothing is queued or in
  flight; :meth:`stop` ends :meth:`run` once the queue is empty (:meth:`cancel` gives up on it); a forked
  child starts with nothing.

Everything :meth:`run` starts runs with OpenTelemetry instrumentation suppressed, so judging and write-back
are not traced and evaluated themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Generic, TypeVar

from opentelemetry import context as otel_context

from ragtriage.errors import WriteBackFailed

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
#: No public API sets it: ``opentelemetry.instrumentation.utils.suppress_instrumentation`` is a context manager
#: of the instrumentation package (not a dependency), and the SDK's own batch processor uses this key too.
_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY


class BoundedConsumer(Generic[Item]):
    """Takes items off a bounded queue on one asyncio loop, at most ``concurrency`` in flight.

    Args:
        process: awaited once per item.
        max_queue_size: items waiting beyond this are dropped (and counted, unless offered uncounted).
        concurrency: items in flight at most.
        process_batch: if given, awaited once per poll with every item taken, instead of ``process``.
        on_error: called inside the ``except`` block when processing raised anything but ``WriteBackFailed``.
        on_idle: called on the loop whenever a poll found nothing to take (housekeeping).
        poll_s: how often an idle loop looks at the queue.
    """

    def __init__(
        self,
        process: Callable[[Item], Awaitable[object]],
        *,
        max_queue_size: int,
        concurrency: int,
        process_batch: Callable[[list[Item]], Awaitable[object]] | None = None,
        on_error: Callable[[], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        poll_s: float = 0.2,
    ) -> None:
        for name, value in (("max_queue_size", max_queue_size), ("concurrency", concurrency)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(poll_s, bool) or not isinstance(poll_s, int | float) or poll_s <= 0:
            raise ValueError(f"poll_s must be a positive number, got {poll_s!r}")
        self._process = process
        self._process_batch = process_batch
        self._on_error = on_error or self._log_error
        self._on_idle = on_idle
        self.max_queue_size = max_queue_size
        self.concurrency = concurrency
        self._poll_s = float(poll_s)
        self._reset()
        ref = weakref.WeakMethod(self._reset)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _reset(self) -> None:
        """Fresh state (also in a forked child: the parent's queue and loop are not ours)."""
        self._queue: deque[Item] = deque()
        self._in_flight = 0  # taken off the queue, not finished; changed under _idle, on the loop only
        self._idle = threading.Condition(threading.Lock())
        # Counted lock-free: next() on an itertools.count is one C call.
        self._queued = itertools.count()
        self._dropped = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nap: asyncio.Future[None] | None = None  # what the idle loop awaits; settled to wake it
        self._freed: asyncio.Event | None = None  # set when an item finishes, for slots()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._last_error_log = -math.inf

    # -- putting items in (any thread) ---------------------------------------------------------------

    def offer(self, item: Item, *, counted: bool = True) -> bool:
        """Queue ``item``; ``False`` (and counted in :attr:`dropped` unless ``counted=False``) when full.

        Under concurrent offers from several threads the bound can be passed by at most one item per thread:
        the length is read before the append, without a lock."""
        if len(self._queue) >= self.max_queue_size:
            if counted:
                next(self._dropped)
            return False
        self._queue.append(item)
        if counted:
            next(self._queued)
        return True

    def wake(self) -> None:
        """Have the loop look at the queue now instead of at its next poll."""
        loop, nap = self._loop, self._nap
        if loop is None or nap is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # on the loop itself: no self-pipe write
            _settle(nap)
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(_settle, nap)

    @property
    def queued(self) -> int:
        """Items taken into the queue (counted ones)."""
        return tally(self._queued)

    @property
    def dropped(self) -> int:
        """Items dropped because the queue was full (counted ones)."""
        return tally(self._dropped)

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- waiting (another thread, or the loop) --------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Block until nothing is queued or in flight; ``False`` if ``timeout_s`` passed first. Never call
        it on the consumer's own loop (use :meth:`drain`)."""
        deadline = time.monotonic() + timeout_s
        self.wake()
        with self._idle:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    async def drain(self, timeout_s: float) -> bool:
        """:meth:`flush` for a coroutine on the consumer's loop."""
        deadline = time.monotonic() + timeout_s
        self.wake()
        while self._queue or self._in_flight:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def slots(self, timeout_s: float | None = None) -> int:
        """How many more items can be taken without one waiting for a free slot; waits (up to ``timeout_s``)
        while there are none. For sources that pull: they read that many, then :meth:`offer` them."""
        if (free := self._free()) > 0:
            return free
        if self._freed is None:
            self._freed = asyncio.Event()
        self._freed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._freed.wait(), timeout_s)
        return max(self._free(), 0)

    def _free(self) -> int:
        return self.concurrency - self._in_flight - len(self._queue)

    def stop(self) -> None:
        """Let :meth:`run` return once the queue is empty and what is in flight has finished."""
        self._stopping = True
        self.wake()

    def cancel(self) -> tuple[list[Item], int]:
        """Give up on what is queued and cancel what is in flight (after a flush that timed out); from any
        thread. Returns the items given up and how many were in flight."""
        with self._idle:
            given_up = list(self._queue)
            self._queue.clear()
            running = self._in_flight
        loop = self._loop
        if loop is not None and running:
            try:
                on_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                on_loop = False
            if on_loop:
                self._cancel_tasks()
            else:
                with contextlib.suppress(RuntimeError):  # the loop is already closed
                    loop.call_soon_threadsafe(self._cancel_tasks)
        return given_up, running

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    # -- taking items out (the loop) -----------------------------------------------------------------

    async def run(self) -> None:
        """Take and process items until :meth:`stop`; then finish what is in flight."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_KEY, True))
        try:
            while True:
                with self._idle:  # take what fits under concurrency; in_flight counts it from here on
                    take = min(len(self._queue), self.concurrency - self._in_flight)
                    items = [self._queue.popleft() for _ in range(take)]
                    self._in_flight += take
                if not items:
                    if self._stopping and not self._queue:
                        break
                    if self._on_idle is not None:
                        self._on_idle()
                    # A bare future and a timer: cheaper than wait_for() on an Event, which this runs 5 times a
                    # second for as long as the app lives.
                    self._nap = nap = loop.create_future()
                    timer = loop.call_later(self._poll_s, _settle, nap)
                    await nap
                    timer.cancel()
                    continue
                if self._process_batch is not None:  # one hand-over for the whole poll: no task per item
                    self._start(loop, self._one_batch(self._process_batch, items))
                else:
                    for item in items:
                        self._start(loop, self._one(item))
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            otel_context.detach(token)
            self._loop = self._nap = None

    def _start(self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[object, object, None]) -> None:
        task = loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, item: Item) -> None:
        """Process ``item``, then keep the slot for the next queued item while there is one: a backlog is
        worked off at once, without a task and a loop turn per item."""
        try:
            while True:
                try:
                    await self._process(item)
                except WriteBackFailed:
                    pass  # counted where it happened
                except Exception:
                    self._on_error()
                if not self._queue:
                    break
                item = self._queue.popleft()  # only this loop's thread takes items: it cannot be gone
        finally:
            self._done(1)

    async def _one_batch(self, process_batch: Callable[[list[Item]], Awaitable[object]], items: list[Item]) -> None:
        try:
            await process_batch(items)
        except Exception:
            self._on_error()
        finally:
            self._done(len(items))

    def _done(self, n: int) -> None:
        with self._idle:
            was_full = self._in_flight >= self.concurrency
            self._in_flight -= n
            self._idle.notify_all()
        if self._freed is not None:
            self._freed.set()
        if was_full and self._queue and self._nap is not None:
            _settle(self._nap)  # items wait for the room just made (we are on the loop)

    def _log_error(self) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 60:
            self._last_error_log = now
            logger.exception("ragtriage: processing an item failed")


def _settle(nap: asyncio.Future[None]) -> None:
    if not nap.done():
        nap.set_result(None)


def tally(counter: itertools.count[int]) -> int:
    """How often ``next()`` was called on a fresh ``itertools.count()`` (read from its repr, ``count(N)``)."""
    return int(repr(counter)[6:-1])
