"""LLM judges over the OpenAI chat API: the Judge protocol, the client (transport, vLLM fleet, batch), prompts
and parsing. The free tiers' checks, which call no model, are in :mod:`ragtriage.checks`."""

from ragtriage.judges.base import Judge, JudgeError, JudgeUsage, JudgeVerdict
from ragtriage.judges.llm import LLMJudge

__all__ = ["Judge", "JudgeError", "JudgeUsage", "JudgeVerdict", "LLMJudge"]
