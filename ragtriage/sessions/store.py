"""Where open sessions are tallied until they go idle: in memory (one process), or in Redis (a worker fleet).

A session's tally is a fixed-size summary of its turns (counts, tiers, cost, the worst turn, the last turn's
conversation), so a long conversation costs no more memory than a short one. Closing is a take: the store
hands each idle session to exactly one caller and forgets it, so of many workers sharing Redis one writes it.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ragtriage.redis_connections import LoopLocalRedis, check_redis_url


@dataclass(slots=True)
class TurnRecord:
    """What one evaluated turn adds to its session's tally."""

    session_id: str
    failed: bool
    error: bool
    tier: str
    #: Lower is worse: failed turns first, then uncertain or errored, then passed; within each, the lowest score.
    badness: float
    worst: dict[str, Any]  # trace id, span id, verdict, score, question: the link and the label of the worst turn
    cost_usd: float
    ended_at: float
    conversation: list[dict[str, str]]  # the turns so far, this one last (for the session judge)


@dataclass(slots=True)
class SessionTally:
    """A session's turns so far, summarised."""

    session_id: str
    turns: int = 0
    failed: int = 0
    errors: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    cost_usd: float = 0.0
    badness: float = float("inf")
    worst: dict[str, Any] = field(default_factory=dict)
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_ended_at: float = 0.0
    conversation: list[dict[str, str]] = field(default_factory=list)

    def add(self, turn: TurnRecord, now: float) -> None:
        self.turns += 1
        self.failed += turn.failed
        self.errors += turn.error
        self.tiers[turn.tier] += 1
        self.cost_usd += turn.cost_usd
        if turn.badness < self.badness:
            self.badness, self.worst = turn.badness, turn.worst
        self.first_seen = self.first_seen or now
        self.last_seen = now
        if turn.ended_at >= self.last_ended_at:
            self.last_ended_at, self.conversation = turn.ended_at, turn.conversation


@runtime_checkable
class SessionStore(Protocol):
    """Open sessions' tallies. ``record`` and ``take_idle`` may raise for a backend failure (the caller counts)."""

    async def record(self, turn: TurnRecord, now: float) -> None: ...

    async def take_idle(self, before: float, limit: int) -> list[SessionTally]:
        """Remove and return sessions last seen before ``before``, each to one caller only."""
        ...

    async def totals(self) -> tuple[int, int]:
        """(sessions closed, of which with a failed turn), over every process sharing the store."""
        ...

    async def aclose(self) -> None: ...


class MemorySessionStore:
    """The sessions of one process (thread and process modes, the collector). At most ``max_sessions`` are
    open; past it the least recently seen is closed early (counted in ``closed_early``) rather than lost."""

    def __init__(self, *, max_sessions: int = 10_000) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive int, got {max_sessions!r}")
        self.max_sessions = max_sessions
        self._open: OrderedDict[str, SessionTally] = OrderedDict()
        self._early: list[SessionTally] = []
        self._lock = threading.Lock()
        self._closed = self._with_failures = 0
        self.closed_early = 0
        ref = weakref.ref(self)

        def forget() -> None:  # a forked child evaluates its own turns: it must not write its parent's sessions
            if (store := ref()) is not None:
                store._lock, store._open, store._early = threading.Lock(), OrderedDict(), []

        os.register_at_fork(after_in_child=forget)

    async def record(self, turn: TurnRecord, now: float) -> None:
        with self._lock:
            tally = self._open.get(turn.session_id)
            if tally is None:
                tally = self._open[turn.session_id] = SessionTally(turn.session_id)
                if len(self._open) > self.max_sessions:
                    self._early.append(self._open.popitem(last=False)[1])
                    self.closed_early += 1
            tally.add(turn, now)
            self._open.move_to_end(turn.session_id)

    async def take_idle(self, before: float, limit: int) -> list[SessionTally]:
        with self._lock:
            taken, self._early = self._early[:limit], self._early[limit:]
            while self._open and len(taken) < limit:
                session_id, tally = next(iter(self._open.items()))
                if tally.last_seen >= before:
                    break
                del self._open[session_id]
                taken.append(tally)
            self._closed += len(taken)
            self._with_failures += sum(1 for t in taken if t.failed)
        return taken

    async def totals(self) -> tuple[int, int]:
        return self._closed, self._with_failures

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    async def aclose(self) -> None:
        pass


_RECORD = """
local k = KEYS[1]
redis.call('HINCRBY', k, 'turns', 1)
redis.call('HINCRBY', k, 'failed', ARGV[2])
redis.call('HINCRBY', k, 'errors', ARGV[3])
redis.call('HINCRBY', k, 'tier:' .. ARGV[4], 1)
redis.call('HINCRBYFLOAT', k, 'cost_usd', ARGV[7])
local b = redis.call('HGET', k, 'badness')
if (not b) or tonumber(ARGV[5]) < tonumber(b) then redis.call('HSET', k, 'badness', ARGV[5], 'worst', ARGV[6]) end
local ended = redis.call('HGET', k, 'last_ended_at')
if (not ended) or tonumber(ARGV[8]) >= tonumber(ended) then
  redis.call('HSET', k, 'last_ended_at', ARGV[8], 'conversation', ARGV[9])
end
redis.call('HSETNX', k, 'first_seen', ARGV[1])
redis.call('HSET', k, 'last_seen', ARGV[1])
redis.call('EXPIRE', k, ARGV[10])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[11])
return 1
"""

_TAKE_IDLE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local k = ARGV[3] .. id
  local fields = redis.call('HGETALL', k)
  redis.call('DEL', k)
  if #fields > 0 then
    table.insert(out, id)
    table.insert(out, fields)
  end
end
return out
"""


class RedisSessionStore:
    """Sessions shared by every process on one Redis (``ragtriage worker``s): any worker may evaluate any turn,
    and the one whose sweep takes an idle session writes it. Each tally expires ``ttl_s`` after its last turn,
    so sessions nobody closes (every worker gone) do not pile up."""

    def __init__(self, url: str, *, project: str = "default", ttl_s: float = 86_400.0) -> None:
        check_redis_url("url", url)
        if not isinstance(project, str) or not project:
            raise ValueError(f"project must be a non-empty string, got {project!r}")
        self._redis = LoopLocalRedis(url, timeout_s=2.0)
        self._prefix = f"ragtriage:session:{project}:"
        self._index = f"ragtriage:sessions:{project}"
        self._totals = f"ragtriage:sessions:{project}:totals"
        self._ttl = max(int(ttl_s), 1)

    async def record(self, turn: TurnRecord, now: float) -> None:
        await self._redis.client().eval(
            _RECORD,
            2,
            self._prefix + turn.session_id,
            self._index,
            repr(now),
            int(turn.failed),
            int(turn.error),
            turn.tier,
            repr(turn.badness),
            json.dumps(turn.worst),
            repr(turn.cost_usd),
            repr(turn.ended_at),
            json.dumps(turn.conversation),
            self._ttl,
            turn.session_id,
        )

    async def take_idle(self, before: float, limit: int) -> list[SessionTally]:
        client = self._redis.client()
        flat = await client.eval(_TAKE_IDLE, 1, self._index, repr(before), limit, self._prefix)
        taken = [_tally(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        if taken:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hincrby(self._totals, "closed", len(taken))
                pipe.hincrby(self._totals, "with_failures", sum(1 for t in taken if t.failed))
                await pipe.execute()
        return taken

    async def totals(self) -> tuple[int, int]:
        values = await self._redis.client().hmget(self._totals, ["closed", "with_failures"])
        return int(values[0] or 0), int(values[1] or 0)

    async def aclose(self) -> None:
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"RedisSessionStore(index={self._index!r})"


def _tally(session_id: str, fields: list[str]) -> SessionTally:
    data = dict(zip(fields[::2], fields[1::2], strict=True))
    tally = SessionTally(
        session_id,
        turns=int(data.get("turns", 0)),
        failed=int(data.get("failed", 0)),
        errors=int(data.get("errors", 0)),
        tiers=Counter({k[5:]: int(v) for k, v in data.items() if k.startswith("tier:")}),
        cost_usd=float(data.get("cost_usd", 0.0)),
        badness=float(data.get("badness", "inf")),
        worst=json.loads(data.get("worst", "{}")),
        first_seen=float(data.get("first_seen", 0.0)),
        last_seen=float(data.get("last_seen", 0.0)),
        last_ended_at=float(data.get("last_ended_at", 0.0)),
        conversation=json.loads(data.get("conversation", "[]")),
    )
    return tally
