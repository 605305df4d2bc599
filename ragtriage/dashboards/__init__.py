"""Dashboards: OTel metrics, a Prometheus endpoint, the Grafana dashboard and an offline HTML report."""

from ragtriage.dashboards.metrics import EvalMetrics, enable_metrics
from ragtriage.dashboards.prometheus import MetricsServer, serve_metrics

__all__ = ["EvalMetrics", "MetricsServer", "enable_metrics", "serve_metrics"]
