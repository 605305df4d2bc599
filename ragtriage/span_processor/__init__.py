"""The span processor that turns the app's RAG traces into evaluations."""

from ragtriage.span_processor.processor import EvalSpanProcessor, RAGSample, ResultWriter

__all__ = ["EvalSpanProcessor", "RAGSample", "ResultWriter"]
