"""The evaluator core: cascade, results, thresholds, cache and cost tracking."""

from ragtriage.evaluator.cache import Cache, MemoryCache, RedisCache
from ragtriage.evaluator.cost import CostTracker
from ragtriage.evaluator.evaluator import RAGEvaluator
from ragtriage.evaluator.results import (
    RAGAlert,
    RAGEvaluationResult,
    RAGEvaluationThresholds,
    RAGRemediationSuggestion,
    TierOutcome,
)

__all__ = [
    "Cache",
    "CostTracker",
    "MemoryCache",
    "RAGAlert",
    "RAGEvaluationResult",
    "RAGEvaluationThresholds",
    "RAGEvaluator",
    "RAGRemediationSuggestion",
    "RedisCache",
    "TierOutcome",
]
