"""Alerts: rules over windows of results, a fire/cooldown/resolve lifecycle, and sinks."""

from ragtriage.alerts.base import AlertEvent, AlertSink, LoggingAlertSink, RecordingAlertSink
from ragtriage.alerts.config import load_rules
from ragtriage.alerts.manager import AlertManager
from ragtriage.alerts.rules import (
    AgreementRule,
    CounterRateRule,
    GaugeRule,
    MetricRule,
    Rule,
    ShareRule,
    TierDriftRule,
    budget_rule,
    default_rules,
    dropped_samples_rule,
    failed_sessions_rule,
    tier_agreement_rule,
)
from ragtriage.alerts.sinks import EmailSink, PagerDutySink, SlackSink, WebhookSink, sinks_from_config
from ragtriage.alerts.state import AlertState, MemoryAlertState, RedisAlertState
from ragtriage.errors import RulesFileError

__all__ = [
    "AgreementRule",
    "AlertEvent",
    "AlertManager",
    "AlertSink",
    "AlertState",
    "CounterRateRule",
    "EmailSink",
    "GaugeRule",
    "LoggingAlertSink",
    "MemoryAlertState",
    "MetricRule",
    "PagerDutySink",
    "RecordingAlertSink",
    "RedisAlertState",
    "Rule",
    "RulesFileError",
    "ShareRule",
    "SlackSink",
    "TierDriftRule",
    "WebhookSink",
    "budget_rule",
    "default_rules",
    "dropped_samples_rule",
    "failed_sessions_rule",
    "load_rules",
    "sinks_from_config",
    "tier_agreement_rule",
]
