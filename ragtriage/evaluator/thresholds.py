"""From measured metrics to a verdict, alerts and remediation suggestions."""

from __future__ import annotations

from collections.abc import Mapping

from ragtriage.evaluator.results import (
    THRESHOLD_METRICS,
    VERDICT_METRICS,
    RAGAlert,
    RAGEvaluationThresholds,
    RAGRemediationSuggestion,
    Verdict,
    alert_severity,
)

_ADVICE: dict[str, tuple[str, str]] = {
    "faithfulness": (
        "Constrain generation to the retrieved contexts (quote-then-answer prompting, lower temperature) "
        "and have the model say when the contexts do not contain the answer.",
        "the answer states things the retrieved contexts do not support",
    ),
    "relevance": (
        "Check query rewriting and the prompt: the answer drifts from what was asked.",
        "the answer does not address the question directly",
    ),
    "answer_quality": (
        "Review the generation prompt and model; add examples of complete answers for this kind of question.",
        "the answer is incomplete, unclear or wrong given the contexts",
    ),
    "recall": (
        "Retrieve more or better candidates: raise top-k, add hybrid (keyword + vector) search, check chunking.",
        "the retrieved contexts lack information the question needs",
    ),
    "precision": (
        "Add a reranker or a relevance cut-off; lower top-k so irrelevant chunks do not dilute the prompt.",
        "many retrieved contexts are irrelevant to the question",
    ),
    "benefit_to_cost": (
        "Retrieve fewer, more relevant characters: smaller chunks, a reranker, or a lower top-k.",
        "the retrieved context is large for how much of it helps",
    ),
}


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
    for metric, threshold_name in THRESHOLD_METRICS:
        value = metrics.get(metric)
        threshold = getattr(thresholds, threshold_name)
        if value is None or value >= threshold:
            continue
        action, why = _ADVICE[metric]
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
