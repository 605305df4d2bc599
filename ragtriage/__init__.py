"""ragtriage: online evaluation of RAG answers inside your OpenTelemetry tracing."""

from ragtriage._version import __version__
from ragtriage.alerts import AlertSink, LoggingAlertSink
from ragtriage.checks import DeterministicChecker
from ragtriage.config import Config
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
from ragtriage.instrumentation import installed_processor, instrument, uninstrument
from ragtriage.judges import Judge, JudgeError, LLMJudge
from ragtriage.span_processor import EvalSpanProcessor

__all__ = [
    "AlertSink",
    "Cache",
    "Config",
    "CostTracker",
    "DeterministicChecker",
    "EvalSpanProcessor",
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
    "installed_processor",
    "instrument",
    "uninstrument",
]
