"""Heavy-judge calls of an offline run through the OpenAI Batch API, at half price.

:class:`BatchJudge` is a :class:`~ragtriage.judges.Judge`: the cascade awaits ``judge()`` as always,
while the calls that arrive together (none new for ``gather_s``) become one batch: one JSONL file
uploaded (``POST /v1/files``, purpose ``batch``), one ``POST /v1/batches`` on
``/v1/chat/completions``, ``GET /v1/batches/{id}`` every ``poll_s`` until the batch ends, then its
output file (``GET /v1/files/{id}/content``) read back by ``custom_id``. A reply is validated
exactly as a synchronous one is, and costs half the judge's prices.

What the batch does not answer (a failed or expired batch, a line in its error file, or anything
still running ``wait_s`` after the batch was created, which is then cancelled) is judged
synchronously by the wrapped judge, at full price: an offline run ends with a verdict or an
explicit ``judge_error`` for every call, never a wait without end. The SDK (``openai``) speaks
to the files and batches endpoints: these calls are few, so its CPU does not matter here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import openai

from ragtriage.judges.base import JudgeError, JudgeVerdict
from ragtriage.judges.llm import OPENAI_URL, LLMJudge

logger = logging.getLogger(__name__)

#: OpenAI bills Batch API tokens at half the synchronous price.
BATCH_DISCOUNT = 0.5
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class _Call:
    custom_id: str
    body: dict[str, object]
    args: tuple[str, str, Sequence[str]]
    checks: Sequence[str]
    verify_claims: bool
    temperature: float | None
    future: asyncio.Future[JudgeVerdict]


class BatchJudge:
    """Wraps an OpenAI-API :class:`LLMJudge` (``inner``); :attr:`stats` and :meth:`note` say what went where."""

    def __init__(self, judge: LLMJudge, *, wait_s: float = 3600.0, poll_s: float = 10.0, gather_s: float = 2.0) -> None:
        if not isinstance(judge, LLMJudge):
            raise TypeError(f"judge must be an LLMJudge, got {type(judge).__name__}")
        if len(judge.servers) != 1:
            raise ValueError("judge must have one server: the Batch API is one endpoint")
        for name, value in (("wait_s", wait_s), ("poll_s", poll_s), ("gather_s", gather_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        self.inner = judge
        self.wait_s, self.poll_s, self.gather_s = float(wait_s), float(poll_s), float(gather_s)
        self.stats = {"batches": 0, "batched": 0, "answered_by_batch": 0, "synchronous": 0}
        self.batch_cost_usd = 0.0
        self.synchronous_cost_usd = 0.0
        self._pending: list[_Call] = []
        self._arrived = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._client: openai.AsyncOpenAI | None = None

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint  # the same verdicts, whichever way they travel

    async def judge(
        self,
        question: str,
        answer: str,
        contexts: Sequence[str],
        *,
        verify_claims: bool = False,
        temperature: float | None = None,
        checks: Sequence[str] = (),
    ) -> JudgeVerdict:
        inner = self.inner
        body = inner.request_body(
            inner.messages(question, answer, contexts, verify_claims=verify_claims, checks=checks),
            verify_claims=verify_claims,
            temperature=inner.temperature if temperature is None else temperature,
        )
        n = self.stats["batched"] = self.stats["batched"] + 1
        future: asyncio.Future[JudgeVerdict] = asyncio.get_running_loop().create_future()
        self._pending.append(
            _Call(f"rt-{n}", body, (question, answer, contexts), checks, verify_claims, temperature, future)
        )
        self._arrived = time.monotonic()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_when_quiet())
        return await future

    async def _flush_when_quiet(self) -> None:
        while self._pending:
            quiet_for = time.monotonic() - self._arrived
            if quiet_for < self.gather_s:
                await asyncio.sleep(self.gather_s - quiet_for)
                continue
            calls, self._pending = self._pending, []
            task = asyncio.create_task(self._run(calls))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, calls: list[_Call]) -> None:
        answered: dict[str, dict[str, object]] = {}
        try:
            answered = await self._batch(calls)
        except Exception as exc:  # whatever went wrong with the batch, its calls still get judged
            logger.warning(
                "ragtriage: the Batch API failed (%s: %s); judging %d calls synchronously",
                type(exc).__name__,
                exc,
                len(calls),
            )
        await asyncio.gather(*(self._settle(call, answered.get(call.custom_id)) for call in calls))

    async def _batch(self, calls: list[_Call]) -> dict[str, dict[str, object]]:
        """The batch's answers with HTTP 200, by custom_id (fewer when it failed, expired or ran out of time)."""
        client = self._openai()
        lines = (
            json.dumps({"custom_id": c.custom_id, "method": "POST", "url": "/v1/chat/completions", "body": c.body})
            for c in calls
        )
        uploaded = await client.files.create(
            file=("ragtriage-batch.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"source": "ragtriage"},
        )
        self.stats["batches"] += 1
        deadline = time.monotonic() + self.wait_s
        while batch.status not in _ENDED:
            if time.monotonic() >= deadline:
                logger.warning(
                    "ragtriage: batch %s still %s after %.0f s: cancelled", batch.id, batch.status, self.wait_s
                )
                with contextlib.suppress(openai.OpenAIError):
                    batch = await client.batches.cancel(batch.id)
                break
            await asyncio.sleep(min(self.poll_s, max(deadline - time.monotonic(), 0.0)))
            batch = await client.batches.retrieve(batch.id)
        if batch.status != "completed" or not batch.output_file_id:
            return {}  # a cancelled batch's partial output is left: its calls are judged synchronously
        content = await client.files.content(batch.output_file_id)
        answered = {}
        for line in content.text.splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            response = record.get("response") or {}
            if response.get("status_code") == 200 and isinstance(response.get("body"), dict):
                answered[record["custom_id"]] = response["body"]
        return answered

    async def _settle(self, call: _Call, reply: dict[str, object] | None) -> None:
        if call.future.done():  # the evaluation was cancelled meanwhile (the run's time limit)
            return
        inner = self.inner
        try:
            if reply is not None:
                self.stats["answered_by_batch"] += 1
                try:
                    verdict = inner._verdict(
                        json.dumps(reply).encode(),
                        time.perf_counter(),
                        1,
                        n_contexts=len(call.args[2]),
                        verify_claims=call.verify_claims,
                    )
                except JudgeError as exc:
                    exc.usage = replace(exc.usage, cost_usd=exc.usage.cost_usd * BATCH_DISCOUNT)
                    self.batch_cost_usd += exc.usage.cost_usd
                    raise
                usage = replace(verdict.usage, cost_usd=verdict.usage.cost_usd * BATCH_DISCOUNT)
                self.batch_cost_usd += usage.cost_usd
                verdict = JudgeVerdict(output=verdict.output, usage=usage, raw=verdict.raw)
            else:
                self.stats["synchronous"] += 1
                try:
                    verdict = await inner.judge(
                        *call.args,
                        verify_claims=call.verify_claims,
                        temperature=call.temperature,
                        checks=call.checks,
                    )
                except JudgeError as exc:
                    self.synchronous_cost_usd += exc.usage.cost_usd
                    raise
                self.synchronous_cost_usd += verdict.usage.cost_usd
        except JudgeError as exc:
            if not call.future.done():
                call.future.set_exception(exc)
            return
        if not call.future.done():
            call.future.set_result(verdict)

    def _openai(self) -> openai.AsyncOpenAI:
        if self._client is None:
            inner = self.inner
            self._client = openai.AsyncOpenAI(
                base_url=inner.servers[0].url if inner.base_url else OPENAI_URL,
                api_key=inner._api_key or "EMPTY",
                max_retries=3,
                timeout=120.0,
            )
        return self._client

    def note(self) -> str:
        """One line for a run's report: what went through batches, at which price."""
        s = self.stats
        return (
            f"heavy judge via the OpenAI Batch API: {s['batched']} call(s) in {s['batches']} batch(es); "
            f"{s['answered_by_batch']} answered by a batch at batch prices ({BATCH_DISCOUNT:.0%} of the judge's "
            f"prices, ${self.batch_cost_usd:.6f}), {s['synchronous']} judged synchronously at full price "
            f"(${self.synchronous_cost_usd:.6f})"
        )

    async def aclose(self) -> None:
        for task in list(self._running):
            task.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self.inner.aclose()
