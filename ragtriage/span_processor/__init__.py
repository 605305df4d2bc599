"""Capture, trace assembly and sampling: the span processor that turns the app's RAG traces into samples,
and the handlers it hands them to (this process, the evaluator process, the Redis Stream)."""

from ragtriage.span_processor.processor import EvalSpanProcessor, SampleHandler

__all__ = ["EvalSpanProcessor", "SampleHandler"]
