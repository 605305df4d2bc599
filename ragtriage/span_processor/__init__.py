"""Capture: the SDK span processor that buffers the app's sampled traces and hands each completed one over to be
assembled (:mod:`ragtriage.intake`) and evaluated (:mod:`ragtriage.handoff`)."""

from ragtriage.span_processor.processor import EvalSpanProcessor

__all__ = ["EvalSpanProcessor"]
