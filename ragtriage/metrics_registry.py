"""The one table of evaluation metrics.

A metric's ``name`` is its only spelling: the attribute on :class:`~ragtriage.RAGEvaluationResult` and on
:class:`~ragtriage.RAGEvaluationThresholds`, the Phoenix annotation, the ``metric`` attribute of the
``ragtriage.eval.score`` OTel histogram, and the alert rule ``{name}_low``. Results, thresholds, alert
rules, the Phoenix export, OTel metrics and the Grafana dashboard all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["answer", "retrieval", "cost"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: what it measures, its default threshold, and what to do when it is low."""

    name: str
    #: ``answer`` metrics decide the verdict; ``retrieval`` and ``cost`` metrics only raise alerts.
    role: Role
    #: The default minimum (inclusive); ``None``: reported, never compared.
    threshold: float | None
    #: What a low value means, and what to change in the RAG app (remediation suggestions).
    why: str
    action: str
    #: The short advice in an alert about the metric's window.
    alert_advice: str
    #: A score in [0, 1], higher is better (what Phoenix is told, and what gets an annotation).
    unit_score: bool = True


METRICS: tuple[Metric, ...] = (
    Metric(
        "faithfulness",
        "answer",
        0.70,
        why="the answer states things the retrieved contexts do not support",
        action="Constrain generation to the retrieved contexts (quote-then-answer prompting, lower temperature) "
        "and have the model say when the contexts do not contain the answer.",
        alert_advice="answers state things the contexts do not support: constrain generation to the contexts",
    ),
    Metric(
        "relevance",
        "answer",
        0.65,
        why="the answer does not address the question directly",
        action="Check query rewriting and the prompt: the answer drifts from what was asked.",
        alert_advice="answers drift from the questions: check query rewriting and the prompt",
    ),
    Metric(
        "answer_quality",
        "answer",
        0.70,
        why="the answer is incomplete, unclear or wrong given the contexts",
        action="Review the generation prompt and model; add examples of complete answers for this kind of question.",
        alert_advice="answers are incomplete or wrong: review the generation prompt and model",
    ),
    Metric(
        "context_recall",
        "retrieval",
        0.65,
        why="the retrieved contexts lack information the question needs",
        action="Retrieve more or better candidates: raise top-k, add hybrid (keyword + vector) search, check chunking.",
        alert_advice="retrieval misses needed information: raise top-k, add hybrid search, check chunking",
    ),
    Metric(
        "context_precision",
        "retrieval",
        0.65,
        why="many retrieved contexts are irrelevant to the question",
        action="Add a reranker or a relevance cut-off; lower top-k so irrelevant chunks do not dilute the prompt.",
        alert_advice="retrieval returns noise: add a reranker or a relevance cut-off",
    ),
    Metric(
        "retrieval_benefit",
        "cost",
        None,
        why="the harmonic mean of context recall and precision",
        action="",
        alert_advice="",
    ),
    Metric(
        "benefit_to_cost",
        "cost",
        1.0,
        why="the retrieved context is large for how much of it helps",
        action="Retrieve fewer, more relevant characters: smaller chunks, a reranker, or a lower top-k.",
        alert_advice="the retrieved context is large for how much of it helps: smaller chunks or a reranker",
        unit_score=False,
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
#: Metrics that decide a verdict, in report order.
VERDICT_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.role == "answer")
#: Metrics with a threshold: compared per evaluation (remediation) and watched by the default alert rules.
THRESHOLD_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.threshold is not None)
#: Scores in [0, 1] compared with a threshold: Phoenix annotations and alert windows.
SCORES: tuple[str, ...] = tuple(m.name for m in METRICS if m.unit_score and m.threshold is not None)
#: Every metric a result carries, for OTel histograms.
ALL: tuple[str, ...] = tuple(m.name for m in METRICS)
