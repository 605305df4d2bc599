"""ragtriage: online evaluation of RAG answers inside your OpenTelemetry tracing."""

from ragtriage.alerts import AlertSink, LoggingAlertSink
from ragtriage.evaluator import (
    Cache,
    CostTracker,
    MemoryCache,
    RAGAlert,
    RAGEvaluationResult,
    RAGEvaluationThresholds,
    RAGEvaluator,
    RAGRemediationSuggestion,
    RedisCache,
)
from ragtriage.judges import DeterministicChecker, Judge, JudgeError, LLMJudge

__version__ = "0.1.0"

__all__ = [
    "AlertSink",
    "Cache",
    "CostTracker",
    "DeterministicChecker",
    "Judge",
    "JudgeError",
    "LLMJudge",
    "LoggingAlertSink",
    "MemoryCache",
    "RAGAlert",
    "RAGEvaluationResult",
    "RAGEvaluationThresholds",
    "RAGEvaluator",
    "RAGRemediationSuggestion",
    "RedisCache",
    "__version__",
]
