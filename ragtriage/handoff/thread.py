"""The in-process hand-off: the app's threads offer items; a daemon thread with its own asyncio loop takes them.

Both ends in one class. The app's side (:meth:`ThreadHandoff.offer`) is an append to a bounded deque: no lock,
no wake-up, no I/O. The background side runs a :class:`~ragtriage.handoff.consumer.BoundedConsumer` on a loop
of its own, started with the first item, so an app that never samples a trace never gets a thread; there the
handler (the pipeline itself, or the sending end of another transport) is awaited. A forked child starts its
own thread on its first item.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic

from ragtriage.handoff.consumer import BoundedConsumer, Item


class ThreadHandoff(Generic[Item]):
    """A :class:`~ragtriage.handoff.consumer.BoundedConsumer` on a background thread.

    Once the consumer stopped, ``finish(finish_s)`` (what the handler still holds, e.g. open sessions) and then
    ``close`` are awaited on the background loop (the handler's connections were opened there); ``on_error`` is
    called in an ``except`` block for anything raised on that thread.
    """

    def __init__(
        self,
        consumer: BoundedConsumer[Item],
        *,
        close: Callable[[], Awaitable[None]],
        finish: Callable[[float], Awaitable[int]] | None = None,
        on_error: Callable[[], None],
        name: str = "ragtriage-eval",
    ) -> None:
        self.consumer = consumer
        self._close = close
        self._finish = finish
        self._finish_s = 0.0
        #: What ``finish`` gave up (0 until it ran); ``None`` while it runs, or if the thread was not joined in time.
        self.unfinished: int | None = 0
        self._on_error = on_error
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        ref = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self.unfinished = 0

    def offer(self, item: Item, *, counted: bool = True) -> bool:
        """Queue ``item`` for the background thread (see :meth:`BoundedConsumer.offer`); never blocks."""
        if not self.consumer.offer(item, counted=counted):
            return False
        if self._thread is None:
            self._start()
        return True

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued and in-flight item is done."""
        return self.consumer.flush(timeout_s)

    def shutdown(self, timeout_s: float = 30.0, *, finish_s: float = 0.0) -> None:
        """Finish what is queued (bounded by ``timeout_s``), stop the loop, give ``finish`` ``finish_s``, close the
        handler, join the thread."""
        self.consumer.flush(timeout_s)
        self._stop(finish_s, 10.0)

    def abandon(self, join_timeout_s: float, *, finish_s: float = 0.0) -> tuple[list[Item], int]:
        """Give up on what is queued and in flight (at interpreter exit, after a flush that timed out): cancel it
        on the loop, stop, give ``finish`` ``finish_s`` and the handler's close ``join_timeout_s``. Returns the
        items given up and how many were in flight."""
        given_up, running = self.consumer.cancel()
        self._stop(finish_s, join_timeout_s)
        return given_up, running

    def _stop(self, finish_s: float, close_s: float) -> None:
        thread = self._thread
        self._finish_s = finish_s
        if thread is not None and self._finish is not None:
            self.unfinished = None  # until finish() says
        self.consumer.stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=finish_s + close_s)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.consumer.run())
            if self._finish is not None:
                try:
                    self.unfinished = loop.run_until_complete(self._finish(self._finish_s))
                except Exception:
                    self._on_error()
            try:
                loop.run_until_complete(self._close())
            except Exception:
                self._on_error()
        except Exception:
            self._on_error()
        finally:
            loop.close()
