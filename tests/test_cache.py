"""The cache tier: in-memory default, Redis shared across evaluators, Redis down."""

from __future__ import annotations

import asyncio

import pytest

from ragtriage import LLMJudge, MemoryCache, RAGEvaluator, RedisCache
from ragtriage.evaluator.cache import cache_key
from ragtriage.testing import JudgeServer, Reply, verdict_json

Q, A, CONTEXTS = "What is the capital of France?", "Paris.", ["Paris is the capital of France."]


def evaluator_for(server: JudgeServer, cache: object, **kwargs: object) -> RAGEvaluator:
    judge = LLMJudge(model="m", base_url=server.url, input_usd_per_1m=1.0, max_retries=0)
    return RAGEvaluator(sample_rate=1.0, local_judge=judge, cache=cache, **kwargs)  # type: ignore[arg-type]


async def test_memory_cache_answers_the_second_time(judge_server: JudgeServer) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.95), prompt_tokens=1000)
    evaluator = evaluator_for(judge_server, None)  # None = the in-memory default
    first = await evaluator.evaluate(Q, A, CONTEXTS)
    second = await evaluator.evaluate(Q, A, CONTEXTS, sample_key="again")
    assert first.tier == "local" and first.eval_cost_usd > 0
    assert (second.tier, second.verdict, second.faithfulness) == ("cache", first.verdict, first.faithfulness)
    assert second.eval_cost_usd == 0.0 and second.sample_key == "again"
    assert second.tier_scores["cache"] == first.faithfulness and second.tier_scores["local"] == first.faithfulness
    assert any("cached from the local tier" in n for n in second.notes)
    assert len(judge_server.requests) == 1
    assert evaluator.summary()["cache_hits"] == 1
    await evaluator.aclose()


async def test_a_cache_hit_keeps_the_standing_of_the_tier_it_came_from(judge_server: JudgeServer) -> None:
    """A hit's scores are as averageable as the verdict it holds: a judge's are; a free-tier fail (never cached: the
    free tiers cost nothing) implies a 0 that is not."""
    judge_server.default = Reply(verdict_json(faithfulness=0.95))
    evaluator = evaluator_for(judge_server, None)
    wrong = "Paris has been the capital since 1794."
    first = [await evaluator.evaluate(Q, answer, CONTEXTS) for answer in (A, wrong)]
    again = [await evaluator.evaluate(Q, answer, CONTEXTS, sample_key="again") for answer in (A, wrong)]
    free = ("deterministic", "deterministic", False)
    assert [(r.tier, r.decided_by, r.judged) for r in first] == [("local", "local", True), free]
    assert [(r.tier, r.decided_by, r.judged) for r in again] == [("cache", "local", True), free]
    assert first[0].scores()["faithfulness"] == again[0].scores()["faithfulness"] == 0.95
    assert first[1].faithfulness == again[1].faithfulness == 0.0 and first[1].scores() == again[1].scores() == {}
    await evaluator.aclose()


async def test_any_input_change_misses(judge_server: JudgeServer) -> None:
    judge_server.default = Reply(verdict_json())
    evaluator = evaluator_for(judge_server, MemoryCache())
    await evaluator.evaluate(Q, A, CONTEXTS)
    await evaluator.evaluate(Q, A, [*CONTEXTS, "another context"])
    await evaluator.evaluate(Q, A + " ", CONTEXTS)
    assert len(judge_server.requests) == 3
    await evaluator.aclose()


def test_cache_key_is_stable_and_unambiguous() -> None:
    key = cache_key("q", "a", ["c1", "c2"], "judge-v1")
    assert key == cache_key("q", "a", ["c1", "c2"], "judge-v1")
    assert key != cache_key("q", "a", ["c1c2"], "judge-v1")
    assert key != cache_key("q", "a", ["c1", "c2"], "judge-v2")
    assert key != cache_key("qa", "", ["c1", "c2"], "judge-v1")


def test_evaluator_fingerprint_follows_judge_configuration(judge_server: JudgeServer) -> None:
    a = evaluator_for(judge_server, False)
    b = RAGEvaluator(local_judge=LLMJudge(model="other", base_url=judge_server.url))
    c = evaluator_for(judge_server, False, confidence_threshold=0.5)
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3


async def test_judge_errors_are_not_cached(judge_server: JudgeServer) -> None:
    judge_server.push(Reply("garbage"), Reply(verdict_json()))
    evaluator = evaluator_for(judge_server, MemoryCache())
    assert (await evaluator.evaluate(Q, A, CONTEXTS)).status == "judge_error"
    assert (await evaluator.evaluate(Q, A, CONTEXTS)).tier == "local"
    await evaluator.aclose()


async def test_memory_cache_ttl_and_lru() -> None:
    cache = MemoryCache(max_entries=2, ttl_s=0.2)
    await cache.set("a", "1")
    await cache.set("b", "2")
    assert await cache.get("a") == "1"  # a is now most recent
    await cache.set("c", "3")  # evicts b
    assert await cache.get("b") is None and await cache.get("a") == "1"
    await asyncio.sleep(0.25)
    assert await cache.get("a") is None and len(cache) == 1


@pytest.mark.redis
async def test_two_evaluators_share_redis(judge_server: JudgeServer, redis_server) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.91))
    one = evaluator_for(judge_server, RedisCache(redis_server.url))
    two = evaluator_for(judge_server, RedisCache(redis_server.url))
    first = await one.evaluate(Q, A, CONTEXTS)
    second = await two.evaluate(Q, A, CONTEXTS)
    assert first.tier == "local" and second.tier == "cache"
    assert second.faithfulness == 0.91 and second.to_dict() | {"tier": "local"} != second.to_dict()
    assert len(judge_server.requests) == 1
    import redis

    ttl = redis.Redis.from_url(redis_server.url).ttl(cache_key(Q, A, CONTEXTS, one.fingerprint))
    assert 86_000 < ttl <= 86_400
    await one.aclose()
    await two.aclose()


@pytest.mark.redis
async def test_redis_down_evaluates_uncached(judge_server: JudgeServer, redis_server, caplog) -> None:
    judge_server.default = Reply(verdict_json())
    cache = RedisCache(redis_server.url, socket_timeout_s=0.2)
    evaluator = evaluator_for(judge_server, cache)
    assert (await evaluator.evaluate(Q, A, CONTEXTS)).tier == "local"
    redis_server.stop()
    results = [await evaluator.evaluate(Q, A + f" {w}", CONTEXTS) for w in ("again", "more")]
    assert [r.tier for r in results] == ["local", "local"] and all(r.status == "ok" for r in results)
    assert cache.errors >= 2
    assert sum("Redis cache unavailable" in r.message for r in caplog.records) == 1  # logged once
    await evaluator.aclose()


@pytest.mark.redis
async def test_redis_restart_is_survived(redis_server) -> None:
    cache = RedisCache(redis_server.url, socket_timeout_s=0.2, retry_after_failure_s=0.0)
    await cache.set("k", "v")
    redis_server.stop()
    assert await cache.get("k") is None and cache.errors == 1
    redis_server.start()  # same port, empty (no persistence)
    await cache.set("k", "v2")
    assert await cache.get("k") == "v2"
    await cache.aclose()


def test_redis_cache_arguments_and_repr() -> None:
    with pytest.raises(ValueError, match="url"):
        RedisCache("localhost:6379")
    with pytest.raises(ValueError, match="ttl_s"):
        RedisCache("redis://localhost", ttl_s=0)
    assert "hunter2" not in repr(RedisCache("redis://:hunter2@localhost:6379/0"))
