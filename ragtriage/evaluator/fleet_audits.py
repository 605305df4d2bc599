"""The audit agreement window of a worker fleet, kept in Redis so every worker reads the fleet's agreement.

Each ``ragtriage worker`` audits the share of the samples it happens to evaluate: with N workers, a window of
its own sees 1/N of the audits, needs N times longer to reach ``tier_agreement_low``'s ``min_samples``, and
disagrees with the other workers' windows. :class:`RedisAgreementWindow` puts every audit in one bounded
window per tier in Redis (the queue's), with the same meaning as :class:`AgreementWindow`: each tier's last
``size`` audits, none older than ``window_s``. One Lua call per audit appends it, trims every tier's window
(by count, and by age on Redis's clock, so workers' clocks need not agree) and returns every tier's counts;
the window is kept as counts, so a call costs the same with 10 or 10,000 audits in the window.

Reads never wait on Redis: :meth:`snapshot` returns the fleet's counts as of this process's last call, and
starts a refresh in the background when they are older than ``refresh_s`` (a worker that audits nothing still
follows the fleet). A failed call is counted (``shared_window_errors``; the first of an outage is logged), Redis
is left alone for a short back-off, and reads fall back to this process's own window, which every audit also
goes to, until a call works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from ragtriage.evaluator.audit import AUDITED_TIERS, Agreement, AgreementWindow, AuditOutcome, agreement_of_counts
from ragtriage.redis_connections import LoopLocalRedis, check_redis_url

logger = logging.getLogger(__name__)

# KEYS: per audited tier, its list of "<ms>|<pair>" entries then its hash of counts per pair.
# ARGV: size, window in ms, the index (1-based) of the tier that gets the audit (0: none, a refresh), its pair.
# Returns per tier the flat HGETALL of its counts, in KEYS order.
_RECORD = """
local size, window_ms, target, pair = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS, 2 do
  local list, counts = KEYS[i], KEYS[i + 1]
  if (i + 1) / 2 == target then
    redis.call('RPUSH', list, now .. '|' .. pair)
    redis.call('HINCRBY', counts, pair, 1)
  end
  local n = redis.call('LLEN', list)
  while n > 0 do
    local head = redis.call('LINDEX', list, 0)
    local bar = string.find(head, '|', 1, true)
    if n <= size and tonumber(string.sub(head, 1, bar - 1)) > now - window_ms then break end
    redis.call('LPOP', list)
    redis.call('HINCRBY', counts, string.sub(head, bar + 1), -1)
    n = n - 1
  end
  if n > 0 then
    redis.call('PEXPIRE', list, window_ms)
    redis.call('PEXPIRE', counts, window_ms)
  else
    redis.call('DEL', list, counts)
  end
  table.insert(out, redis.call('HGETALL', counts))
end
return out
"""
_UNDECIDED = "-"


class RedisAgreementWindow(AgreementWindow):
    """The fleet's agreement window in Redis under ``ragtriage:audits:{project}``; this process's own window
    (the base class: ``counts``, ``cost_usd``, ``outcomes``) is kept too, as the fallback.

    Example::

        audits = RedisAgreementWindow("redis://redis:6379/0", project="my-app")
        evaluator = RAGEvaluator(local_judge=..., audit_rate=0.05, audits=audits)
        evaluator.audits.snapshot()["local"]  # every worker's audits of the local tier
    """

    def __init__(
        self,
        url: str,
        *,
        project: str = "default",
        size: int = 1000,
        window_s: float = 24 * 3600.0,
        refresh_s: float = 30.0,
        retry_after_failure_s: float = 5.0,
    ) -> None:
        super().__init__(size=size, window_s=window_s)
        check_redis_url("url", url)
        if not isinstance(project, str) or not project:
            raise ValueError(f"project must be a non-empty string, got {project!r}")
        for name, value in (("refresh_s", refresh_s), ("retry_after_failure_s", retry_after_failure_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        self._redis = LoopLocalRedis(url, timeout_s=2.0)
        prefix = f"ragtriage:audits:{project}"
        self._keys = [key for tier in AUDITED_TIERS for key in (f"{prefix}:{tier}", f"{prefix}:{tier}:counts")]
        self._refresh_s = float(refresh_s)
        self._backoff_s = float(retry_after_failure_s)
        self._down_until = 0.0
        self._logged_down = False
        #: The fleet's agreement per tier as of the last call that worked, and when (monotonic); ``None``: local.
        self._fleet: dict[str, Agreement] | None = None
        self._fleet_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refreshing: asyncio.Task[None] | None = None

    async def record(self, outcome: AuditOutcome) -> None:
        self.add(outcome)
        pair = f"{outcome.verdict}:{outcome.audit_verdict or _UNDECIDED}"
        await self._call(AUDITED_TIERS.index(outcome.tier) + 1, pair)

    async def refresh(self) -> None:
        """Read the fleet's window now (a snapshot older than ``refresh_s`` starts this by itself)."""
        await self._call(0, "")

    async def _call(self, target: int, pair: str) -> None:
        self._loop = asyncio.get_running_loop()
        if time.monotonic() < self._down_until:
            return  # backing off: this audit is in the local window only
        try:
            replies = await self._redis.client().eval(
                _RECORD, len(self._keys), *self._keys, self.size, int(self.window_s * 1000), target, pair
            )
            fleet: dict[str, Agreement] = {t: _agreement(t, n) for t, n in zip(AUDITED_TIERS, replies, strict=True)}
        except (RedisError, OSError, asyncio.TimeoutError, ValueError, TypeError) as exc:
            self._down_until = time.monotonic() + self._backoff_s
            self.count("shared_window_errors")
            if not self._logged_down:  # once an outage, not once an audit
                self._logged_down = True
                logger.warning(
                    "ragtriage: the fleet's audit window in Redis is unavailable (%s); agreement and "
                    "tier_agreement_low read this worker's own audits until it is back",
                    type(exc).__name__,
                )
            self._fleet = None
            return
        self._fleet, self._fleet_at, self._logged_down = fleet, time.monotonic(), False

    def agreement(self, tier: str) -> Agreement:
        fleet = self._fleet_view()
        if fleet is None or tier not in fleet:
            return super().agreement(tier)
        return fleet[tier]

    def snapshot(self) -> dict[str, Agreement]:
        fleet = self._fleet_view()
        return dict(fleet) if fleet is not None else super().snapshot()

    def _fleet_view(self) -> dict[str, Agreement] | None:
        fleet, age = self._fleet, time.monotonic() - self._fleet_at
        if age >= self._refresh_s:
            self._start_refresh()
        if fleet is None or age >= self.window_s:  # never refreshed since: no longer the fleet's
            return None
        return fleet

    def _start_refresh(self) -> None:
        """A refresh on the evaluator's loop, from any thread (a metrics scrape), at most one at a time."""
        if self._refreshing is not None and not self._refreshing.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop
        if running is not None and (loop is None or running is loop):
            self._refreshing = running.create_task(self.refresh())
        elif loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._start_refresh_on_loop)

    def _start_refresh_on_loop(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())

    async def aclose(self) -> None:
        """Close this loop's Redis connection (the evaluator's ``aclose`` calls it)."""
        task = self._refreshing
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            await asyncio.gather(task, return_exceptions=True)
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"RedisAgreementWindow(key={self._keys[0].rsplit(':', 1)[0]!r}, size={self.size})"


def _agreement(tier: str, flat: list[str]) -> Agreement:
    counts: dict[tuple[str, str | None], int] = {}
    for pair, n in zip(flat[::2], flat[1::2], strict=True):
        verdict, _, audit = pair.partition(":")
        if int(n) > 0:
            counts[(verdict, None if audit == _UNDECIDED else audit)] = int(n)
    return agreement_of_counts(tier, counts)


__all__ = ["RedisAgreementWindow"]
