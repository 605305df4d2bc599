"""Judges of the cascade: deterministic checks and LLM judges behind one Protocol."""

from ragtriage.judges.base import Judge, JudgeError, JudgeUsage, JudgeVerdict
from ragtriage.judges.deterministic import DeterministicChecker, DeterministicReport
from ragtriage.judges.llm import LLMJudge

__all__ = [
    "DeterministicChecker",
    "DeterministicReport",
    "Judge",
    "JudgeError",
    "JudgeUsage",
    "JudgeVerdict",
    "LLMJudge",
]
