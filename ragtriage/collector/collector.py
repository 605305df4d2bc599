"""The OTLP collector: receive, forward unchanged, assemble whole traces, hand samples to the pipeline.

One asyncio loop does it all, in three independent lanes, so none waits on another:

* receiving (the ASGI app): authenticate the sender (:class:`~ragtriage.collector.auth.TokenAuth`: a
  request without a valid token is answered 401 and neither forwarded nor evaluated), read the body,
  queue it for forwarding, decode, buffer sampled spans; answer;
* forwarding (:class:`~ragtriage.collector.forwarder.Forwarder`): a byte-bounded buffer to the next hop;
* evaluating: every ``tick_s``, complete traces are assembled into samples (the same
  :func:`~ragtriage.intake.assembly.assemble` as ``instrument()``) and handed to the sample
  handler the runtime built (the pipeline, or the Redis Stream for ``ragtriage worker``\\ s) by the
  hand-offs' one :class:`~ragtriage.handoff.consumer.BoundedConsumer`: at most ``max_concurrency`` at once,
  from a bounded queue whose overflow is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ragtriage.collector.assembly import TraceAssembler
from ragtriage.collector.auth import AUTHORIZATION, TokenAuth
from ragtriage.collector.forwarder import Forwarder
from ragtriage.collector.otlp import decoded_body, empty_response, media_type, spans
from ragtriage.errors import OTLPError
from ragtriage.handoff.consumer import BoundedConsumer
from ragtriage.intake.assembly import assemble, stats_key
from ragtriage.pipeline import SampleHandler
from ragtriage.sample import RAGSample

logger = logging.getLogger(__name__)
#: How long stopping may take: evaluate what is buffered, forward what is queued, score the open sessions.
_CLOSE_S = 30.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: Why :meth:`Collector.ingest` did not take a request it could take later (answered 503 / UNAVAILABLE).
BACKPRESSURE = "forward buffer full; retry"
#: Why :meth:`Collector.authenticate` refused a request (answered 401 / UNAUTHENTICATED).
UNAUTHENTICATED = "missing or wrong bearer token (authorization: Bearer <token>)"
#: The largest request body taken (OTLP exporters batch 512 spans by default: far below this).
MAX_BODY_BYTES = 32 * 1024 * 1024


class Collector:
    """An ASGI app receiving OTLP/HTTP traces on ``/v1/traces``; see the module docstring."""

    def __init__(
        self,
        handler: SampleHandler,
        forwarder: Forwarder | None,
        assembler: TraceAssembler,
        *,
        auth: TokenAuth | None = None,
        max_queue_size: int = 2048,
        max_concurrency: int = 8,
        tick_s: float = 0.25,
    ) -> None:
        self.handler = handler
        self.forwarder = forwarder
        self.assembler = assembler
        self.auth = auth or TokenAuth()
        self._tick = tick_s
        self._consumer: BoundedConsumer[RAGSample] = BoundedConsumer(
            handler, max_queue_size=max_queue_size, concurrency=max_concurrency, on_error=self._evaluation_failed
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._counts: Counter[str] = Counter()

    # -- the ASGI app ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == "/health" and method == "GET":
            await _respond(send, 200, b"ok", "text/plain")
        elif path != "/v1/traces":
            await _respond(send, 404, b"not found: OTLP/HTTP traces go to /v1/traces", "text/plain")
        elif method != "POST":
            await _respond(send, 405, b"POST OTLP traces to /v1/traces", "text/plain")
        else:
            await self._export(scope, receive, send)

    async def _export(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        sender = self.authenticate(headers)
        if sender is None:  # answered before the body is read: a flood costs a header check
            await _respond(send, 401, UNAUTHENTICATED.encode(), "text/plain", www_authenticate="Bearer")
            return
        try:
            kind = media_type(headers.get("content-type"))
        except OTLPError as exc:
            await _respond(send, 415, str(exc).encode(), "text/plain")
            return
        body = await _body(receive)
        if body is None:
            await _respond(send, 413, f"body over {MAX_BODY_BYTES} bytes".encode(), "text/plain")
            return
        outcome = self.ingest(body, kind, headers, sender)
        if outcome is None:
            await _respond(send, 200, empty_response(kind), kind)
        elif outcome is BACKPRESSURE:
            await _respond(send, 503, outcome.encode(), "text/plain", retry_after="1")
        else:
            await _respond(send, 400, outcome.encode(), "text/plain")

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        """The sender of a request (from OTLP/HTTP or OTLP/gRPC), or ``None``, counted: refuse it."""
        self._counts["requests_received"] += 1
        sender = self.auth.sender(headers.get(AUTHORIZATION))
        if sender is None:
            self._counts["requests_unauthenticated"] += 1
        return sender

    def ingest(self, body: bytes, kind: str, headers: Mapping[str, str], sender: str) -> str | None:
        """Take one export request from ``sender`` (as :meth:`authenticate` named it): ``None`` when taken, else
        why not: :data:`BACKPRESSURE` (retry later) or what is wrong with it (do not retry)."""
        if self.forwarder is not None and not self.forwarder.offer(body, headers):
            # The next hop is behind: tell the exporter to retry later, and take nothing of it now, so a
            # retried request is neither forwarded nor evaluated twice.
            self._counts["requests_rejected_backpressure"] += 1
            return BACKPRESSURE
        try:
            received = spans(decoded_body(body, headers.get("content-encoding")), kind, self.assembler.sampled)
        except OTLPError as exc:  # forwarded all the same: the next hop may know better; not evaluated
            self._counts["requests_undecodable"] += 1
            return str(exc)
        self._counts["spans_received"] += len(received)
        self.assembler.add(received, time.monotonic(), sender)
        return None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the evaluating lane --------------------------------------------------------------------------

    def start(self) -> None:
        if self.forwarder is not None:
            self.forwarder.start()
        self._tasks = [asyncio.create_task(self._complete_traces()), asyncio.create_task(self._consumer.run())]

    async def _complete_traces(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                self._take(self.assembler.complete(time.monotonic()))
            except Exception:
                self._counts["internal_errors"] += 1
                logger.exception("ragtriage collect: assembling traces failed")

    def _take(self, traces: list[tuple[int, list[Any]]]) -> None:
        for trace_id, buffered in traces:
            samples, skipped = assemble(trace_id, buffered)
            for reason, n in skipped.items():
                self._counts[stats_key(reason)] += n
            root_start_ns, root_end_ns = self.assembler.root_times.pop(trace_id, (0, 0))
            for sample in samples:
                sample.root_start_ns, sample.root_end_ns = root_start_ns, root_end_ns
                self._consumer.offer(sample)
        if self._consumer.queue_size:
            self._consumer.wake()

    def _evaluation_failed(self) -> None:
        self._counts["internal_errors"] += 1
        logger.exception("ragtriage collect: evaluating a sample failed")

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Complete every buffered trace now (as if its quiet period had passed), evaluate, forward."""
        deadline = time.monotonic() + timeout_s
        self._take(self.assembler.complete(float("inf")))
        if not await self._consumer.drain(timeout_s):
            return False
        return self.forwarder is None or await self.forwarder.drain(max(0.0, deadline - time.monotonic()))

    async def aclose(self) -> None:
        """Evaluate what is buffered, forward what is queued, score the sessions still open (all within 30 s),
        then stop."""
        deadline = time.monotonic() + _CLOSE_S
        flushed = False
        with contextlib.suppress(Exception):
            flushed = await self.flush(_CLOSE_S)
        if not flushed:
            self._consumer.cancel()
        self._consumer.stop()
        for task in self._tasks[:1]:  # the tick; the consumer returns once nothing is queued or in flight
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            unwritten = await self.handler.finish(max(deadline - time.monotonic(), 0.0))
        except Exception:
            self._evaluation_failed()
        else:
            if unwritten:
                self._counts["sessions_lost_at_exit"] += unwritten
                logger.warning("ragtriage collect: %d open session(s) were not written before it stopped", unwritten)
        if self.forwarder is not None:
            await self.forwarder.aclose()
        await self.handler.aclose()

    @property
    def stats(self) -> dict[str, int]:
        """Counters of every lane (the names the span processor uses where the concept is the same)."""
        counts = Counter(self._counts)
        counts.update(self.assembler.counts)
        if self.forwarder is not None:
            counts.update(self.forwarder.counts)
            counts["forward_buffer_bytes"] = self.forwarder.buffered_bytes
        for name, value in (
            ("samples_queued", self._consumer.queued),
            ("samples_dropped_queue_full", self._consumer.dropped),
        ):
            if value:
                counts[name] = value
        for name, value in self.handler.counts.items():
            counts[self.handler.stats_prefix + name] += value
        counts["traces_in_flight"] = self.assembler.in_flight
        counts["queue_size"] = self._consumer.queue_size
        return dict(counts)


async def _body(receive: Receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, content_type: str, **extra: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(name.replace("_", "-").encode(), value.encode()) for name, value in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
