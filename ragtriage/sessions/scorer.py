"""Session scores: the turns of one conversation (traces sharing a ``session.id``), judged as a whole.

Each evaluated turn is tallied in a :mod:`store <ragtriage.sessions.store>` (memory, or Redis for a worker
fleet). A sweep on the evaluating loop closes every session idle for ``idle_s`` (and, when the app ends,
:meth:`SessionScorer.close_open` those still open in memory): its score (share of turns
failed, the worst turn, the tiers used, what its judging cost; optionally one judge call on whether it resolved
the user's need) goes to the writer (Phoenix session annotations) and to the observers (OTel metrics, alerts).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from ragtriage.evaluator.conversation import recent_turns
from ragtriage.evaluator.cost import CostTracker
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.judges.base import JudgeError
from ragtriage.judges.session import SessionJudge
from ragtriage.metrics_registry import VERDICT_METRICS
from ragtriage.sample import RAGSample
from ragtriage.sessions.store import MemorySessionStore, SessionStore, SessionTally, TurnRecord

logger = logging.getLogger(__name__)

#: How much of the conversation a tally keeps for the session judge (the last turn's history and the turn).
CONVERSATION_TURNS = 40
CONVERSATION_CHARS = 16_000
_RANK = {"fail": 0.0, "uncertain": 2.0, "pass": 4.0}
#: Sessions written at once when the open ones are closed together (:meth:`SessionScorer.close_open`).
_CLOSE_WRITES = 8


@dataclass(frozen=True, slots=True)
class SessionScore:
    """One closed session: what its turns' verdicts add up to."""

    session_id: str
    turns: int
    failed: int
    errors: int
    #: Turns per deciding tier (``cache``, ``deterministic``, ``local``, ``heavy``; ``none``: no verdict).
    tiers: dict[str, int]
    #: The worst turn: ``trace_id``, ``span_id`` (hex), ``verdict``, ``score`` (its lowest verdict metric).
    worst: dict[str, object]
    cost_usd: float
    first_seen: float
    last_seen: float
    #: The session judge's verdict, when it ran: resolved or not, its score and reason; or why it gave none.
    resolved: bool | None = None
    resolution_score: float | None = None
    resolution_reason: str | None = None
    resolution_error: str | None = None
    #: What the session judge's call cost (also in ``cost_usd``, which adds the turns' judging).
    resolution_cost_usd: float = 0.0
    #: The conversation up to its last turn, kept only for the session judge (empty without one).
    conversation: list[dict[str, str]] = field(default_factory=list, repr=False)

    @property
    def failed_share(self) -> float:
        return self.failed / self.turns if self.turns else 0.0


class SessionWriter(Protocol):
    """Where closed sessions go (Phoenix's session annotations by default)."""

    async def write_session(self, score: SessionScore) -> None: ...


class SessionScorer:
    """Tallies evaluated turns by ``session.id`` and scores each session once it has been idle ``idle_s``.

    Args:
        store: where open sessions are tallied (default: this process's memory; a
            :class:`~ragtriage.sessions.RedisSessionStore` shares them between workers).
        idle_s: a session with no new turn for this long is closed and scored.
        judge: a :class:`~ragtriage.judges.session.SessionJudge` asked whether the conversation resolved the
            user's need (one call per session, its cost recorded in ``cost_tracker`` under ``session``).
        writer: where scores are written (``write_session``), e.g. :class:`~ragtriage.export.PhoenixWriter`.
        cost_tracker: the evaluator's, so the session judge's spend counts against the hourly budget.

    Example::

        scorer = SessionScorer(idle_s=60, writer=phoenix_writer)
        pipeline = Pipeline(evaluator, writer=phoenix_writer, sessions=scorer)
    """

    def __init__(
        self,
        *,
        store: SessionStore | None = None,
        idle_s: float = 300.0,
        judge: SessionJudge | None = None,
        writer: SessionWriter | None = None,
        cost_tracker: CostTracker | None = None,
        max_per_sweep: int = 100,
    ) -> None:
        if isinstance(idle_s, bool) or not isinstance(idle_s, int | float) or not 0 < idle_s < math.inf:
            raise ValueError(f"idle_s must be a positive number, got {idle_s!r}")
        if store is not None and not isinstance(store, SessionStore):
            raise TypeError(f"store must implement SessionStore, got {store!r}")
        if judge is not None and not isinstance(judge, SessionJudge):
            raise TypeError(f"judge must be a SessionJudge, got {type(judge).__name__}")
        if writer is not None and not callable(getattr(writer, "write_session", None)):
            raise TypeError(f"writer must have an async write_session(score), got {writer!r}")
        if cost_tracker is not None and not isinstance(cost_tracker, CostTracker):
            raise TypeError(f"cost_tracker must be a CostTracker, got {type(cost_tracker).__name__}")
        if isinstance(max_per_sweep, bool) or not isinstance(max_per_sweep, int) or max_per_sweep < 1:
            raise ValueError(f"max_per_sweep must be a positive int, got {max_per_sweep!r}")
        self.store: SessionStore = store if store is not None else MemorySessionStore()
        self.idle_s = float(idle_s)
        self.judge = judge
        self.writer = writer
        self.cost_tracker = cost_tracker
        self.max_per_sweep = max_per_sweep
        self.counts: Counter[str] = Counter()
        self._totals = (0, 0)
        self._observers: list[Callable[[SessionScore], None]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._sweeping = self._closing = False
        self._last_log = -math.inf

    def totals(self) -> tuple[int, int]:
        """(sessions with a failed turn, sessions closed) over every process sharing the store, as of the last
        sweep: what the failed-sessions alert reads (no I/O)."""
        return self._totals

    def add_observer(self, observer: Callable[[SessionScore], None]) -> None:
        """Call ``observer`` with every closed session's score (quick, non-blocking; errors are counted)."""
        if not callable(observer):
            raise TypeError(f"observer must be callable, got {observer!r}")
        self._observers.append(observer)

    async def record(self, sample: RAGSample, result: RAGEvaluationResult) -> None:
        """Add an evaluated turn to its session (a sample without ``session_id`` is no session's)."""
        if sample.session_id is None or not result.sampled:
            return
        conversation: list[dict[str, str]] = []
        if self.judge is not None:  # only the session judge reads it: without one, a tally holds no text but this
            this_turn = [
                {"role": "user", "content": sample.question},
                {"role": "assistant", "content": sample.answer},
            ]
            conversation, _ = recent_turns(
                [*sample.history, *this_turn], max_turns=CONVERSATION_TURNS, max_chars=CONVERSATION_CHARS
            )
        score = _lowest_score(result)
        turn = TurnRecord(
            session_id=sample.session_id,
            failed=result.verdict == "fail",
            error=result.status != "ok",
            tier=result.tier or "none",
            badness=_RANK[result.verdict] + (score if score is not None else 1.0),
            worst={
                "trace_id": f"{sample.trace_id:032x}",
                "span_id": f"{sample.root_span_id:016x}",
                "verdict": result.verdict,
                "score": score,
                "question": sample.question[:300],
            },
            cost_usd=result.eval_cost_usd,
            ended_at=sample.ended_at,
            conversation=conversation,
        )
        try:
            await self.store.record(turn, time.time())  # wall clock: a Redis store is shared between hosts
        except Exception as exc:
            self._failed("record", exc)
            return
        self.counts["turns_recorded"] += 1
        loop = asyncio.get_running_loop()
        sweeper = self._sweeper
        if sweeper is None or sweeper.done() or sweeper.get_loop() is not loop:  # a forked child runs a new loop
            self._sweeper = loop.create_task(self._sweep_forever())

    async def sweep(self, now: float | None = None) -> list[SessionScore]:
        """Close and score the sessions idle since ``now - idle_s``; returns their scores."""
        before = (time.time() if now is None else now) - self.idle_s
        try:
            tallies = await self.store.take_idle(before, self.max_per_sweep)
        except Exception as exc:
            self._failed("take", exc)
            return []
        scores = [await self._close(tally) for tally in tallies]
        if scores:
            try:
                closed, with_failures = await self.store.totals()
                self._totals = (with_failures, closed)
            except Exception as exc:
                self._failed("totals", exc)
        return scores

    async def close_open(self, timeout_s: float) -> int:
        """Close and score every session still open in this process's memory, within ``timeout_s``: on close or
        at exit, where they would otherwise end unscored. Returns how many could not be written.

        A shared (Redis) store keeps its open sessions for another worker: nothing is taken from it. The session
        judge gets at most half the time; a session it could not judge in that time is written with a
        ``judge_error`` saying so. What is not written by ``timeout_s`` is given up (counted in
        ``counts["sessions_unwritten_at_close"]``), never waited for.
        """
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 <= timeout_s < math.inf:
            raise ValueError(f"timeout_s must be a number >= 0, got {timeout_s!r}")
        deadline = time.monotonic() + timeout_s
        await self._stop_sweeping(deadline)
        if not isinstance(self.store, MemorySessionStore):
            return 0
        try:
            tallies = await self.store.take_idle(math.inf, self.store.open_sessions + self.store.closed_early)
        except Exception as exc:
            self._failed("take", exc)
            return 0
        scores = [self._score(tally) for tally in tallies]
        if self.judge is not None and scores:
            scores = await self._judge_all(scores, time.monotonic() + (deadline - time.monotonic()) / 2)
        for score in scores:
            self._closed(score)
        unwritten = 0
        if self.writer is not None and scores:
            unwritten = len(scores) - await self._write_all(scores, deadline)
        if scores:
            closed, with_failures = await self.store.totals()
            self._totals = (with_failures, closed)
        self.counts["sessions_unwritten_at_close"] += unwritten
        return unwritten

    async def _stop_sweeping(self, deadline: float) -> None:
        """Stop the sweeper; a sweep under way finishes (it holds the sessions it took) while time allows."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is None or sweeper.done():
            return
        if self._sweeping and sweeper.get_loop() is asyncio.get_running_loop():
            self._closing = True  # it returns after this sweep
            await asyncio.wait({sweeper}, timeout=max(deadline - time.monotonic(), 0.0))
            self._closing = False
        sweeper.cancel()

    async def _judge_all(self, scores: list[SessionScore], deadline: float) -> list[SessionScore]:
        tasks = [asyncio.ensure_future(self._judge(score)) for score in scores]
        await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.0))
        judged = []
        for score, task in zip(scores, tasks, strict=True):
            if not task.done():
                task.cancel()
                self.counts["session_judge_skipped_at_close"] += 1
                judged.append(
                    replace(score, resolution_error="not judged: the time to close (exit_flush_timeout_s) ran out")
                )
            elif (exc := task.exception()) is not None:
                self.counts["session_judge_errors"] += 1
                judged.append(replace(score, resolution_error=f"the session judge failed: {type(exc).__name__}"))
            else:
                judged.append(task.result())
        return judged

    async def _write_all(self, scores: list[SessionScore], deadline: float) -> int:
        """Write ``scores``, a few at a time, until ``deadline``; returns how many were written."""
        gate = asyncio.Semaphore(_CLOSE_WRITES)

        async def write(score: SessionScore) -> bool:
            async with gate:
                return await self._write(score)

        tasks = [asyncio.ensure_future(write(score)) for score in scores]
        await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.0))
        for task in tasks:
            task.cancel()
        return sum(1 for t in tasks if t.done() and not t.cancelled() and t.exception() is None and t.result())

    def _score(self, tally: SessionTally) -> SessionScore:
        return SessionScore(
            session_id=tally.session_id,
            turns=tally.turns,
            failed=tally.failed,
            errors=tally.errors,
            tiers=dict(tally.tiers),
            worst=tally.worst,
            cost_usd=round(tally.cost_usd, 8),
            first_seen=tally.first_seen,
            last_seen=tally.last_seen,
            conversation=tally.conversation,
        )

    async def _close(self, tally: SessionTally) -> SessionScore:
        score = self._score(tally)
        if self.judge is not None:
            score = await self._judge(score)
        self._closed(score)
        await self._write(score)
        return score

    def _closed(self, score: SessionScore) -> None:
        self.counts["sessions_closed"] += 1
        for observer in self._observers:
            try:
                observer(score)
            except Exception:
                self.counts["observer_errors"] += 1
                logger.exception("ragtriage: session observer %r failed", observer)

    async def _write(self, score: SessionScore) -> bool:
        if self.writer is None:
            return False
        try:
            await self.writer.write_session(score)
        except Exception as exc:
            self._failed("write", exc)
            return False
        self.counts["sessions_written"] += 1
        return True

    async def _judge(self, score: SessionScore) -> SessionScore:
        assert self.judge is not None
        try:
            verdict = await self.judge.resolved(score.conversation)
        except JudgeError as exc:
            self._spend(exc.usage.cost_usd, exc.usage.prompt_tokens, exc.usage.completion_tokens)
            self.counts["session_judge_errors"] += 1
            return replace(
                score,
                cost_usd=round(score.cost_usd + exc.usage.cost_usd, 8),
                resolution_error=exc.reason,
                resolution_cost_usd=exc.usage.cost_usd,
            )
        usage = verdict.usage
        self._spend(usage.cost_usd, usage.prompt_tokens, usage.completion_tokens)
        return replace(
            score,
            cost_usd=round(score.cost_usd + usage.cost_usd, 8),
            resolved=verdict.resolved,
            resolution_score=verdict.score,
            resolution_reason=verdict.reason,
            resolution_cost_usd=usage.cost_usd,
        )

    def _spend(self, usd: float, prompt_tokens: int, completion_tokens: int) -> None:
        if self.cost_tracker is not None:
            self.cost_tracker.record(
                "session", usd=usd, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )

    async def _sweep_forever(self) -> None:
        every = min(max(self.idle_s / 4, 0.05), 5.0)
        while not self._closing:
            await asyncio.sleep(every)
            self._sweeping = True
            try:
                await self.sweep()
            finally:
                self._sweeping = False

    def _failed(self, what: str, exc: BaseException) -> None:
        self.counts[f"session_{what}_errors"] += 1
        now = time.monotonic()
        if now - self._last_log > 60:
            self._last_log = now
            logger.warning("ragtriage: session %s failed (%s: %s); sessions go on", what, type(exc).__name__, exc)

    async def aclose(self) -> None:
        """Stop sweeping and close the store. What is still open in memory ends here unscored, unless
        :meth:`close_open` ran first (``Pipeline.finish`` runs it at the end)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await self.store.aclose()

    def __repr__(self) -> str:
        return f"SessionScorer(idle_s={self.idle_s}, store={self.store!r}, judge={self.judge!r})"


def _lowest_score(result: RAGEvaluationResult) -> float | None:
    return min(result.scores(VERDICT_METRICS).values(), default=None)  # a judge's: free-tier scores are only 0s
