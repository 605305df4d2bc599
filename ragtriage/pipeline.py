"""The evaluation pipeline: what happens to a sample once it is assembled, wherever that is.

evaluate (the cascade; the evaluator's observers, alerts and metrics, see each result) ->
``on_result`` -> write-back -> the turn's session (``sessions``, scored once idle). The same
object runs on the app's background thread, in the evaluator process, in ``ragtriage worker``
and under ``ragtriage collect``; :mod:`ragtriage.runtime` builds it from a
:class:`~ragtriage.config.Config`.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar, Protocol, runtime_checkable

from ragtriage.errors import WriteBackFailed
from ragtriage.evaluator.audit import AuditOutcome
from ragtriage.evaluator.evaluator import RAGEvaluator
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.sample import RAGSample
from ragtriage.sessions.scorer import SessionScorer

logger = logging.getLogger(__name__)


class SampleHandler:
    """What a consumer does with each completed sample: evaluate it (:class:`Pipeline`) or pass it on to where
    it is evaluated (``handoff.child_process.ProcessHandler``, ``handoff.redis_stream.StreamPublisher``).

    A base class, as httpx's ``AsyncBaseTransport`` is: a subclass implements :meth:`__call__`; every other
    member has a default, so the consumers call them without asking whether they exist.
    """

    #: Prefix of :attr:`counts` in the stats of the consumer that holds this handler.
    stats_prefix: ClassVar[str] = "handler_"
    #: ``True``: the consumer hands over all the samples of one poll at once (:meth:`handle_batch`, one task
    #: per poll); ``False``: one task per sample, each :meth:`__call__` in flight on its own.
    batched: ClassVar[bool] = False

    #: What happened to the samples handed over, merged into the consumer's stats under ``stats_prefix``.
    counts: Mapping[str, int] = MappingProxyType({})

    async def __call__(self, sample: RAGSample) -> object:
        raise NotImplementedError

    async def handle_batch(self, samples: list[RAGSample]) -> None:
        """Hand over ``samples`` together; by default one after the other."""
        for sample in samples:
            await self(sample)

    async def finish(self, timeout_s: float) -> int:
        """Before :meth:`aclose`, once no more samples come: settle, within ``timeout_s``, what the handler holds
        beyond single samples (a :class:`Pipeline`'s open sessions). Returns how many of those it gave up."""
        return 0

    async def aclose(self) -> None:
        """Release connections, child processes and the like, on the loop that used them."""


class ResultWriter(Protocol):
    """Where results go after evaluation (Phoenix by default)."""

    async def write(self, sample: RAGSample, result: RAGEvaluationResult) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class AuditWriter(Protocol):
    """A writer that also puts an audit's verdict next to the evaluated trace (``audit_verdict`` in Phoenix)."""

    async def write_audit(self, sample: RAGSample, outcome: AuditOutcome) -> None: ...


class Pipeline(SampleHandler):
    """Evaluate a sample, hand the result to ``on_result``, write it back; count what happened.

    The :class:`SampleHandler` that evaluates where it runs: a consumer awaits it per sample. An audit the
    evaluator starts finishes later on the same loop; an :class:`AuditWriter` writes its verdict then.
    """

    stats_prefix = ""

    def __init__(
        self,
        evaluator: RAGEvaluator,
        *,
        writer: ResultWriter | None = None,
        on_result: Callable[[RAGSample, RAGEvaluationResult], None] | None = None,
        sessions: SessionScorer | None = None,
    ) -> None:
        if not isinstance(evaluator, RAGEvaluator):
            raise TypeError(f"evaluator must be a RAGEvaluator, got {type(evaluator).__name__}")
        if on_result is not None and not callable(on_result):
            raise TypeError("on_result must be callable")
        self.evaluator = evaluator
        if sessions is not None and not isinstance(sessions, SessionScorer):
            raise TypeError(f"sessions must be a SessionScorer, got {type(sessions).__name__}")
        self.writer = writer
        self.sessions = sessions
        self._on_result = on_result
        self.counts: Counter[str] = Counter()
        self._last_log = {"on_result": -math.inf, "write_back": -math.inf}
        ref = weakref.ref(self)  # a forked child counts its own evaluations, not its parent's
        os.register_at_fork(after_in_child=lambda: (p := ref()) and p.counts.clear())  # type: ignore[func-returns-value]

    async def __call__(self, sample: RAGSample) -> RAGEvaluationResult:
        """Evaluate and write back ``sample``; raises :class:`WriteBackFailed` when the write-back failed."""
        writer = self.writer

        async def write_audit(outcome: AuditOutcome) -> None:
            if isinstance(writer, AuditWriter):
                await writer.write_audit(sample, outcome)

        result = await self.evaluator.evaluate(
            sample.question,
            sample.answer,
            sample.contexts,
            history=sample.history,
            sample_key=sample.trace_id,
            on_audit=write_audit,
        )
        self.counts[f"evaluations_{result.status}"] += 1
        if self._on_result is not None:
            try:
                self._on_result(sample, result)
            except Exception:
                self.counts["on_result_errors"] += 1
                if self._due("on_result"):
                    logger.exception("ragtriage: the on_result callback failed (the evaluation is kept)")
        if self.writer is not None:
            try:
                await self.writer.write(sample, result)
            except Exception as exc:
                self.counts["write_back_failed"] += 1
                if self._due("write_back"):  # Phoenix down: one line a minute, not one per sample
                    logger.warning(
                        "ragtriage: write-back failed (%d so far), e.g. for %s: %s; check endpoint "
                        "(PHOENIX_COLLECTOR_ENDPOINT) and phoenix_api_key (PHOENIX_API_KEY)",
                        self.counts["write_back_failed"],
                        sample.sample_id,
                        exc,
                    )
                raise WriteBackFailed(str(exc)) from exc
        if self.sessions is not None:  # after the write-back: a sample redelivered for a retry counts once
            await self.sessions.record(sample, result)
        return result

    def _due(self, what: str) -> bool:
        now = time.monotonic()
        if now - self._last_log[what] > 60:
            self._last_log[what] = now
            return True
        return False

    async def finish(self, timeout_s: float) -> int:
        """Score and write the sessions still open in this process's memory (they would end unscored), within
        ``timeout_s``; returns how many could not be written (:meth:`SessionScorer.close_open`)."""
        if self.sessions is None:
            return 0
        return await self.sessions.close_open(timeout_s)

    async def aclose(self) -> None:
        """Close the sessions' and the evaluator's connections on this loop (its audits finish first, still able
        to write back), then the writer's."""
        if self.sessions is not None:
            await self.sessions.aclose()
        await self.evaluator.aclose()
        if self.writer is not None:
            await self.writer.aclose()

    def __repr__(self) -> str:
        return f"Pipeline({self.evaluator!r}, writer={self.writer!r})"
