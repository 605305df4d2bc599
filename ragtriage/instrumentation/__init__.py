"""``ragtriage.instrument()``: one line to evaluate an app's RAG traces."""

from ragtriage.instrumentation.instrument import installed_processor, installed_runtime, instrument, uninstrument

__all__ = ["installed_processor", "installed_runtime", "instrument", "uninstrument"]
