"""Alerts: rules over windows of results, a fire/cooldown/resolve lifecycle, and sinks."""

from ragtriage.alerts.base import AlertEvent, AlertSink, LoggingAlertSink
from ragtriage.alerts.config import RulesFileError, load_rules
from ragtriage.alerts.manager import AlertManager
from ragtriage.alerts.rules import (
    CounterRateRule,
    GaugeRule,
    MetricRule,
    Rule,
    ShareRule,
    TierDriftRule,
    budget_rule,
    default_rules,
    dropped_samples_rule,
)
from ragtriage.alerts.sinks import EmailSink, PagerDutySink, SlackSink, WebhookSink, sinks_from_env

__all__ = [
    "AlertEvent",
    "AlertManager",
    "AlertSink",
    "CounterRateRule",
    "EmailSink",
    "GaugeRule",
    "LoggingAlertSink",
    "MetricRule",
    "PagerDutySink",
    "Rule",
    "RulesFileError",
    "ShareRule",
    "SlackSink",
    "TierDriftRule",
    "WebhookSink",
    "budget_rule",
    "default_rules",
    "dropped_samples_rule",
    "load_rules",
    "sinks_from_env",
]
