"""Forwarding: every request, unchanged, to the next hop (Phoenix, or any OTLP/HTTP endpoint).

Forwarding never waits on evaluation, and a receiving request never waits on forwarding: requests
are queued in a buffer bounded in bytes. When the buffer is full the collector answers OTLP's
retryable ``503`` with ``Retry-After`` (the exporter retries), so memory never grows without bound.
The next hop failing is retried with bounded, jittered back-off (honouring its ``Retry-After``);
a request that still fails is dropped and counted (``forward_dropped``), and the first failure of a
run of them is logged with the setting that points at the next hop.

A request is forwarded with the credentials it came with, never with the collector's: with receiver
authentication on, its ``authorization`` header held the collector's token, which stays here. Only an
operator's explicit choice (``own_key``, ``--forward-with-own-key``), and only with receiver
authentication on, forwards authenticated requests with the collector's own Phoenix key instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Mapping

import httpx

from ragtriage._log_hygiene import own_http, redact

logger = logging.getLogger(__name__)

#: Statuses OTLP/HTTP calls retryable.
RETRYABLE = frozenset({429, 502, 503, 504})
#: Request headers passed on to the next hop (the rest are hop-by-hop or recomputed) ...
_CONTENT = ("content-type", "content-encoding")
#: ... and the credentials among them.
_CREDENTIALS = ("authorization", "api_key", "api-key", "x-api-key")


class Forwarder:
    """Sends queued requests to ``url`` with ``concurrency`` requests in flight."""

    def __init__(
        self,
        url: str,
        *,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        concurrency: int = 4,
        max_retries: int = 3,
        timeout_s: float = 10.0,
        receiver_auth: bool = False,
        own_key: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"forward URL must be an http(s) URL, got {redact(url)!r}")
        if own_key is not None and not receiver_auth:
            raise ValueError(
                "own_key (--forward-with-own-key) needs receiver authentication (RAGTRIAGE_COLLECTOR_TOKENS or "
                "--token-file): an unauthenticated sender must never reach the next hop with the collector's key"
            )
        self.url = url
        self._max_bytes = max_buffer_bytes
        self._concurrency = concurrency
        self._max_retries = max_retries
        self._timeout = timeout_s
        # with receiver auth on, ``authorization`` carried the collector's token: it is not the sender's to pass on
        self._credentials = tuple(c for c in _CREDENTIALS if not (receiver_auth and c == "authorization"))
        self._own = {"authorization": f"Bearer {own_key}"} if own_key else None
        self._queue: deque[tuple[bytes, dict[str, str]]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._failing = False
        self.counts: Counter[str] = Counter()

    def offer(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Queue one request; ``False`` when the buffer is full (the caller answers 503)."""
        if self._bytes + len(body) > self._max_bytes and self._bytes:
            self.counts["forward_rejected_buffer_full"] += 1
            return False
        passed = {k: v for k, v in headers.items() if k.lower() in _CONTENT}
        if self._own is not None:
            passed.update(self._own)
        else:
            passed.update((k, v) for k, v in headers.items() if k.lower() in self._credentials)
        self._queue.append((body, passed))
        self._bytes += len(body)
        self._idle.clear()
        self._ready.set()
        return True

    @property
    def uses_own_key(self) -> bool:
        return self._own is not None

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout)
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self._concurrency)]

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued was forwarded (or given up on); ``False`` at the timeout."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        return False

    async def aclose(self, timeout_s: float = 10.0) -> None:
        await self.drain(timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self.counts["forward_dropped"] += len(self._queue)  # still queued at shutdown: not sent
        self._queue.clear()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            body, headers = self._queue.popleft()
            self._in_flight += 1
            try:
                await self._send(body, headers)
            finally:
                self._in_flight -= 1
                self._bytes -= len(body)
                if not self._queue and not self._in_flight:
                    self._idle.set()

    async def _send(self, body: bytes, headers: dict[str, str]) -> None:
        assert self._client is not None
        reason = ""
        for attempt in range(self._max_retries + 1):
            wait = min(0.5 * 2**attempt, 8.0) * random.uniform(0.5, 1.5)
            try:
                with own_http(*headers.values()):
                    response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            else:
                if response.status_code < 300:
                    self.counts["requests_forwarded"] += 1
                    if self._failing:
                        self._failing = False
                        logger.warning("ragtriage collect: forwarding to %s works again", redact(self.url))
                    return
                reason = f"HTTP {response.status_code}"
                if response.status_code not in RETRYABLE:
                    break
                wait = _retry_after(response) or wait
            if attempt < self._max_retries:
                self.counts["forward_retries"] += 1
                await asyncio.sleep(wait)
        self.counts["forward_dropped"] += 1
        if not self._failing:
            self._failing = True
            logger.warning(
                "ragtriage collect: could not forward a request to %s (%s); dropping it and counting "
                "(forward_dropped). Check --forward / PHOENIX_COLLECTOR_ENDPOINT",
                redact(self.url),
                reason,
            )


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers["retry-after"]), 30.0)
    except (KeyError, ValueError):
        return None
