"""Alert sinks (Slack, PagerDuty, email, webhooks come with the alert rules)."""

from ragtriage.alerts.base import AlertSink, LoggingAlertSink

__all__ = ["AlertSink", "LoggingAlertSink"]
