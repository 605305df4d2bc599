"""``ragtriage.instrument()``: one line to evaluate an app's RAG traces."""

from ragtriage.instrumentation.instrument import build_evaluator, installed_processor, instrument, uninstrument

__all__ = ["build_evaluator", "installed_processor", "instrument", "uninstrument"]
