"""From measured metrics to a verdict, alerts and remediation suggestions."""

from __future__ import annotations

from collections.abc import Mapping

from ragtriage.evaluator.results import (
    RAGAlert,
    RAGEvaluationThresholds,
    RAGRemediationSuggestion,
    Verdict,
    alert_severity,
)
from ragtriage.metrics_registry import BY_NAME, THRESHOLD_METRICS, VERDICT_METRICS


def verdict_for(metrics: Mapping[str, float | None], thresholds: RAGEvaluationThresholds) -> Verdict:
    """``fail`` if any measured answer metric is below its threshold, ``pass`` if all were measured and
    none is, ``uncertain`` if a metric is missing. Retrieval metrics raise alerts but never fail an answer."""
    measured = [(m, metrics.get(m)) for m in VERDICT_METRICS]
    if any(v is not None and v < getattr(thresholds, m) for m, v in measured):
        return "fail"
    if all(v is not None for _, v in measured):
        return "pass"
    return "uncertain"


def alerts_for(
    metrics: Mapping[str, float | None], thresholds: RAGEvaluationThresholds
) -> tuple[list[RAGAlert], list[RAGRemediationSuggestion]]:
    alerts: list[RAGAlert] = []
    suggestions: list[RAGRemediationSuggestion] = []
    for metric in THRESHOLD_METRICS:
        value = metrics.get(metric)
        threshold = getattr(thresholds, metric)
        if value is None or value >= threshold:
            continue
        action, why = BY_NAME[metric].action, BY_NAME[metric].why
        severity = alert_severity(value, threshold)
        alerts.append(
            RAGAlert(
                metric=metric,
                severity=severity,
                message=f"{metric} {value:.2f} is below its threshold {threshold:.2f}: {why}",
                recommendation=action,
                value=value,
                threshold=threshold,
            )
        )
        suggestions.append(RAGRemediationSuggestion(metric=metric, action=action, rationale=why))
    return alerts, suggestions


def near_threshold(
    metrics: Mapping[str, float | None], thresholds: RAGEvaluationThresholds, margin: float
) -> str | None:
    """The first answer metric within ``margin`` of its threshold, described; ``None`` if none is."""
    for metric in VERDICT_METRICS:
        value = metrics.get(metric)
        threshold = getattr(thresholds, metric)
        if value is not None and abs(value - threshold) <= margin:
            return f"{metric} {value:.2f} is within {margin:.2f} of its threshold {threshold:.2f}"
    return None
