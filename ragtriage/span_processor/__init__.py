"""The span processor that turns the app's RAG traces into evaluations."""

from ragtriage.sample import RAGSample
from ragtriage.span_processor.processor import EvalSpanProcessor, ResultWriter

__all__ = ["EvalSpanProcessor", "RAGSample", "ResultWriter"]
