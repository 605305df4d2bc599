"""The free tiers: deterministic checks and lexical grounding, no model called. A failure here is either
certain evidence (it ends the cascade) or a signal the LLM judges in :mod:`ragtriage.judges` are told to check."""

from ragtriage.checks.deterministic import DeterministicChecker, DeterministicReport

__all__ = ["DeterministicChecker", "DeterministicReport"]
