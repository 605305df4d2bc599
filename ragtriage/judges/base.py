"""The judge plug-in point and what a judge returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ragtriage.errors import RagtriageError
from ragtriage.judges.schema import JudgeOutput


@dataclass(frozen=True, slots=True)
class JudgeUsage:
    """What one judgement spent, successful or not: failed calls cost money too."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class JudgeVerdict:
    """A validated judgement."""

    output: JudgeOutput
    usage: JudgeUsage
    raw: str

    @property
    def faithfulness(self) -> float:
        """Claim-level when claims were verified (supported / total), else the judge's own score."""
        claims = self.output.claims
        if claims:
            return round(sum(c.supported for c in claims) / len(claims), 4)
        return self.output.faithfulness


class JudgeError(RagtriageError):
    """A judgement that could not be had: transport failure, retries spent, or invalid output."""

    def __init__(self, reason: str, *, usage: JudgeUsage | None = None, raw: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.usage = usage or JudgeUsage()
        self.raw = raw


@runtime_checkable
class Judge(Protocol):
    """Anything that can judge a RAG sample; :class:`~ragtriage.judges.LLMJudge` is the built-in one."""

    @property
    def fingerprint(self) -> str:
        """Identifies the judge's configuration in cache keys (model, prompt version, ...)."""
        ...

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
        """Return a validated verdict or raise :class:`JudgeError`; never return a guess. ``checks`` are the
        free tiers' signals, terms to verify; a judge written before they existed may omit the parameter."""
        ...
