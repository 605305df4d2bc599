"""Evaluate in a child process, so judging never competes with the app for the GIL. Both ends of the pipe.

The app's end, :class:`ProcessHandler`, a sample handler: the span processor's background thread writes each
sample as one line (``<seq> <sample JSON>``) to the child's stdin and waits for the child's ``<seq> <status>``
line on stdout. The child's end, :func:`serve`, runs in ``python -m ragtriage.instrumentation.evaluator_process``
(the entry point, which builds the pipeline from the environment the parent set) and evaluates each line
with the same :class:`~ragtriage.pipeline.Pipeline` as the in-process path, through the hand-offs' one
bounded consumer. Here, per sample, the app's process only pays for encoding one JSON line and reading one
short reply.

Each write starts with ``drops <dropped> <offered>``: the app process's totals of RAG traces
dropped before evaluation, for the child's dropped-samples alert.

If the child dies, the samples it held are counted as ``lost`` and the next
sample starts a new child (at most one start per ``restart_after_s``; samples
arriving in between are counted as ``dropped``). On EOF on its stdin (this
process closed it or died) the child finishes what it holds and exits. A
forked app process closes its copy of the pipe and starts its own child.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from ragtriage.errors import WriteBackFailed
from ragtriage.handoff.consumer import BoundedConsumer
from ragtriage.pipeline import Pipeline, SampleHandler
from ragtriage.sample import RAGSample

logger = logging.getLogger(__name__)

#: The reply statuses the child sends; anything else is counted as ``error``.
STATUSES = ("ok", "write_back_failed", "malformed", "error")
#: A sample line may carry many large contexts; the child reads lines up to this size.
MAX_LINE_BYTES = 256 * 1024 * 1024
#: Replies are sent in batches: one wake-up of the app process's background thread per batch, not per sample
#: (a wake-up takes the GIL from the app's thread). 200 ms, like the parent's poll: a sample's slot is held
#: that much longer, and force_flush() in the app waits up to that much longer.
REPLY_DELAY_S = 0.2
child_logger = logging.getLogger("ragtriage.evaluator_process")


@dataclass(slots=True)
class _Batch:
    left: int
    done: asyncio.Future[None]


class ProcessHandler(SampleHandler):
    """Sends samples to a child evaluator process and waits for each one's reply."""

    stats_prefix = "child_"
    batched = True  # one write per poll, not a syscall per sample

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        restart_after_s: float = 5.0,
        shutdown_timeout_s: float = 30.0,
        drops: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        if isinstance(command, str) or not command or not all(isinstance(c, str) for c in command):
            raise TypeError("command must be a non-empty sequence of strings")
        for name, value in (("restart_after_s", restart_after_s), ("shutdown_timeout_s", shutdown_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if drops is not None and not callable(drops):
            raise TypeError("drops must be a callable returning (dropped, offered) totals")
        self._command = list(command)
        self._drops = drops
        self._env = dict(env) if env is not None else None
        self._restart_after = float(restart_after_s)
        self._shutdown_timeout = float(shutdown_timeout_s)
        self._reset()
        ref = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _reset(self) -> None:
        self.counts: Counter[str] = Counter()
        self._child: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, _Batch] = {}
        self._seq = itertools.count()
        self._next_start = 0.0
        self._starting: asyncio.Lock | None = None

    def _after_fork(self) -> None:
        """A forked app process starts its own child: it must not write to, or hold open, its parent's."""
        child = self._child
        if child is not None and child.stdin is not None:
            with contextlib.suppress(Exception):
                child.stdin.get_extra_info("pipe").close()  # else the child never sees EOF
        self._reset()

    @property
    def pid(self) -> int | None:
        """The running child's process id, if there is one."""
        child = self._live_child()
        return None if child is None else child.pid

    def _live_child(self) -> asyncio.subprocess.Process | None:
        child = self._child
        return child if child is not None and child.returncode is None else None

    async def __call__(self, sample: RAGSample) -> None:
        await self.handle_batch([sample])

    async def handle_batch(self, samples: list[RAGSample]) -> None:
        """Send the samples in one write (a syscall per sample would hand the GIL back and forth with the
        app's thread) and return when the child has answered for all of them, or died."""
        child = await self._running_child()
        if child is None:
            self.counts["dropped"] += len(samples)
            return
        batch = _Batch(len(samples), asyncio.get_running_loop().create_future())
        lines = [] if self._drops is None else [b"drops %d %d\n" % self._drops()]
        for sample in samples:
            seq = next(self._seq)
            self._waiting[seq] = batch
            lines.append(b"%d %s\n" % (seq, sample.to_json().encode("utf-8", "surrogatepass")))
        try:
            assert child.stdin is not None
            child.stdin.write(b"".join(lines))  # buffered by the transport; in-flight samples are bounded
        except (ConnectionError, OSError, RuntimeError):
            pass  # the child is gone: _read_replies answers "lost" for everything it held
        await batch.done

    async def _running_child(self) -> asyncio.subprocess.Process | None:
        if (child := self._live_child()) is not None:
            return child
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if (child := self._live_child()) is not None:
                return child  # another batch started it while this one waited
            if time.monotonic() < self._next_start:
                return None
            self._next_start = time.monotonic() + self._restart_after
            try:
                self._child = await asyncio.create_subprocess_exec(
                    *self._command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=self._env,
                )
            except OSError as exc:
                logger.warning("ragtriage: could not start the evaluator process %s: %s", self._command, exc)
                return None
            self.counts["starts"] += 1
            self._reader = asyncio.get_running_loop().create_task(self._read_replies(self._child))
            return self._child

    async def _read_replies(self, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        pending = b""
        try:
            while data := await child.stdout.read(1 << 16):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    seq, _, status = line.partition(b" ")
                    self._answer(int(seq), status.decode("ascii"))
        except (ValueError, UnicodeDecodeError, ConnectionError, OSError):  # garbled replies: a dead child
            child.kill()
        returncode = await child.wait()
        if self._waiting:
            logger.warning(
                "ragtriage: the evaluator process exited (%s) with %d samples unfinished",
                returncode,
                len(self._waiting),
            )
        for unanswered in list(self._waiting):
            self._answer(unanswered, "lost")

    def _answer(self, seq: int, status: str) -> None:
        batch = self._waiting.pop(seq, None)
        if batch is None:
            return
        self.counts[status if status in STATUSES or status == "lost" else "error"] += 1
        batch.left -= 1
        if batch.left == 0 and not batch.done.done():
            batch.done.set_result(None)

    async def aclose(self) -> None:
        """Close the child's stdin; it finishes what it holds and exits (killed after ``shutdown_timeout_s``)."""
        child, reader = self._child, self._reader
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), self._shutdown_timeout)
        except asyncio.TimeoutError:
            logger.warning("ragtriage: the evaluator process did not exit in %ss; killing it", self._shutdown_timeout)
            child.kill()
            await child.wait()
        if reader is not None:
            await reader

    def __repr__(self) -> str:
        return f"ProcessHandler(command={self._command!r})"


# -- the child's end --------------------------------------------------------------------------------------


async def serve(
    pipeline: Pipeline, concurrency: int, replies: BinaryIO, *, on_drops: Callable[[int, int], None]
) -> None:
    """Evaluate the samples read on stdin, at most ``concurrency`` at once, and answer each on ``replies``;
    ``drops`` lines go to ``on_drops(dropped, offered)``. Returns at EOF, once every sample is answered."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, replies)
    stdout = asyncio.StreamWriter(transport, protocol, None, loop)
    outbox: list[bytes] = []

    async def one(line: tuple[bytes, bytes]) -> None:
        seq, payload = line
        try:
            await pipeline(RAGSample.from_json(payload.decode("utf-8", "surrogatepass")))
            status = "ok"
        except ValueError as exc:
            child_logger.warning("malformed sample %s: %s", seq.decode("ascii", "replace"), exc)
            status = "malformed"
        except WriteBackFailed:
            status = "write_back_failed"  # counted and logged (rate-limited) by the pipeline
        except Exception:
            child_logger.exception("evaluation failed")
            status = "error"
        if not outbox:
            loop.call_later(REPLY_DELAY_S, send)
        outbox.append(seq + b" " + status.encode() + b"\n")

    def send() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # the parent is gone
            stdout.write(b"".join(outbox))
        outbox.clear()

    # No queue beyond the slots: a line is read only when there is room to evaluate it.
    consumer: BoundedConsumer[tuple[bytes, bytes]] = BoundedConsumer(
        one, max_queue_size=concurrency, concurrency=concurrency
    )
    running = loop.create_task(consumer.run())
    while line := await stdin.readline():
        seq, _, payload = line.rstrip(b"\n").partition(b" ")
        if seq == b"drops":
            with contextlib.suppress(ValueError):
                dropped, offered = map(int, payload.split())
                on_drops(dropped, offered)
            continue
        await consumer.slots()
        consumer.offer((seq, payload))
        consumer.wake()
    consumer.stop()
    await running
    send()
    with contextlib.suppress(ConnectionError):
        await stdout.drain()
