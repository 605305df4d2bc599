"""``ragtriage collect``: evaluate whole traces from any service and any language, received over OTLP/HTTP."""

from ragtriage.collector.server import build_collector, serve

__all__ = ["build_collector", "serve"]
