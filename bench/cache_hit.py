"""Cache-hit latency of ``RAGEvaluator.evaluate()`` over a real loopback redis-server (goal: p50 <= 0.3 ms).

Starts ``redis-server`` on a free loopback port (no persistence) and the scripted judge in a child
process, warms the cache with one evaluation through the judge (a ~2 KB-context sample the local
tier passes), then times N sequential hits in one asyncio loop. Baselines in the same run, timed
round-robin with the hits (one call of each kind in turn) so they share the machine's noise: a raw
``redis.asyncio`` GET of the same key (same timeouts as ``RedisCache``), and a hit on the
in-process ``MemoryCache``. For scale, also a floor: the same GET hand-written in RESP over one
``asyncio`` stream (no client library). Both servers are stopped at the end.

    python bench/cache_hit.py
    python bench/cache_hit.py -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from _support import JudgeProcess, RedisProcess, machine, make_samples, percentile

from ragtriage import LLMJudge, MemoryCache, RAGEvaluationResult, RAGEvaluator, RedisCache
from ragtriage.evaluator.cache import cache_key


async def timed(fn: Callable[[], Awaitable[object]], n: int, into: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        await fn()
        into.append((clock() - t0) / 1e6)


def line(name: str, ms: list[float]) -> str:
    return (
        f"{name:38s}: p50 {percentile(ms, 50):.3f} ms  p90 {percentile(ms, 90):.3f} ms  "
        f"p99 {percentile(ms, 99):.3f} ms  (n={len(ms)})"
    )


class StreamGet:
    """GET over a bare asyncio stream: what one loopback round trip costs without a client library."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.command = f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self) -> str:
        self.writer.write(self.command)
        header = await self.reader.readline()
        assert header[:1] == b"$", header
        data = await self.reader.readexactly(int(header[1:]) + 2)
        return data[:-2].decode()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def main(n: int) -> None:
    sample = next(s for s in make_samples(6) if s.kind == "grounded")
    q, a, ctx = sample.question, sample.answer, sample.contexts
    print(machine())
    print(f"sample: {sum(len(c) for c in ctx)} context characters; N={n} calls per kind, round-robin")
    with RedisProcess() as redis_server, JudgeProcess(delay_s=0.0) as judge_server:
        judge = LLMJudge(model="bench-judge", base_url=judge_server.url)
        on_redis = RAGEvaluator(local_judge=judge, cache=RedisCache(redis_server.url), sample_rate=1.0)
        in_memory = RAGEvaluator(local_judge=judge, cache=MemoryCache(), sample_rate=1.0)
        raw = aioredis.Redis.from_url(
            redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True
        )
        try:
            for evaluator in (on_redis, in_memory):
                first = await evaluator.evaluate(q, a, ctx)
                second = await evaluator.evaluate(q, a, ctx)
                assert first.tier == "local" and second.tier == "cache", (first.tier, second.tier, first.notes)
            key = cache_key(q, a, ctx, on_redis.fingerprint)
            payload = await raw.get(key)
            assert payload, "the warmed key is not in redis"
            print(f"cached payload: {len(payload)} bytes of JSON")
            stream = StreamGet(redis_server.port, key)
            await stream.open()
            assert await stream.get() == payload

            redis_ms: list[float] = []
            raw_ms: list[float] = []
            memory_ms: list[float] = []
            stream_ms: list[float] = []
            decode_ms: list[float] = []
            key_ms: list[float] = []

            async def decode() -> None:
                RAGEvaluationResult.from_dict(json.loads(payload))

            async def make_key() -> None:
                cache_key(q, a, ctx, on_redis.fingerprint)

            # warm-up of every path
            paths = (lambda: on_redis.evaluate(q, a, ctx), lambda: raw.get(key), lambda: in_memory.evaluate(q, a, ctx))
            for fn in (*paths, stream.get):
                await timed(fn, 200, [])
            # round-robin, one call of each kind in turn, so all kinds share the machine's noise
            kinds = (
                (lambda: on_redis.evaluate(q, a, ctx), redis_ms),
                (lambda: raw.get(key), raw_ms),
                (lambda: in_memory.evaluate(q, a, ctx), memory_ms),
                (stream.get, stream_ms),
            )
            for i in range(n):
                for fn, into in kinds:
                    await timed(fn, 1, into)
                if i % 4 == 0:
                    await timed(decode, 1, decode_ms)
                    await timed(make_key, 1, key_ms)
            hits = on_redis.counters.get("cache_hit", 0)
            assert hits >= n, on_redis.counters
        finally:
            await stream.close()
            await raw.aclose()
            await on_redis.aclose()
            await in_memory.aclose()

    print(line("evaluate() hit, RedisCache", redis_ms))
    print(line("baseline: raw redis.asyncio GET", raw_ms))
    print(line("evaluate() hit, MemoryCache", memory_ms))
    print(line("floor: GET on a bare asyncio stream", stream_ms))
    print(line("  part: json.loads + from_dict", decode_ms))
    print(line("  part: cache_key (sha256 of ~2 KB)", key_ms))
    p50 = percentile(redis_ms, 50)
    raw50 = percentile(raw_ms, 50)
    mem50 = percentile(memory_ms, 50)
    print(f"ratio RedisCache hit p50 / raw GET p50     : {p50 / raw50:.2f}x  (+{(p50 - raw50) * 1000:.0f} us)")
    print(f"ratio MemoryCache hit p50 / raw GET p50    : {mem50 / raw50:.2f}x")
    print(f"ratio RedisCache hit p50 / MemoryCache p50 : {p50 / mem50:.2f}x")
    print(f"ratio raw redis.asyncio GET / stream GET   : {raw50 / percentile(stream_ms, 50):.2f}x")
    print(f"goal RedisCache hit p50 <= 0.3 ms          : {'met' if p50 <= 0.3 else 'NOT met'} ({p50:.3f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="timed hits per kind")
    args = parser.parse_args()
    asyncio.run(main(args.n))
