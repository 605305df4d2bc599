"""One ``redis.asyncio`` client per event loop (asyncio connections cannot cross loops)."""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff


def check_redis_url(name: str, url: object) -> str:
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        # The URL may hold a password: do not echo it.
        raise ValueError(f"{name} must be a redis://, rediss:// or unix:// URL")
    return url


class LoopLocalRedis:
    """Hands out this loop's client for ``url``; ``aclose()`` closes the running loop's one."""

    def __init__(self, url: str, *, timeout_s: float, decode_responses: bool = True) -> None:
        self._url = url
        self._timeout = timeout_s
        self._decode = decode_responses
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def client(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = aioredis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                decode_responses=self._decode,
                # A pooled connection can be stale after a Redis restart: retry once on a fresh one.
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
                retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
