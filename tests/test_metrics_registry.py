"""One table of metrics, one spelling each: every consumer reads ragtriage.metrics_registry."""

from __future__ import annotations

from dataclasses import fields

from ragtriage import RAGEvaluationResult, RAGEvaluationThresholds
from ragtriage.alerts import default_rules, load_rules
from ragtriage.alerts.rules import Observation
from ragtriage.dashboards.grafana import dashboard_json
from ragtriage.export.phoenix import span_annotations
from ragtriage.metrics_registry import ALL, BY_NAME, SCORES, THRESHOLD_METRICS, VERDICT_METRICS
from ragtriage.sample import Document, RAGSample


def test_results_and_thresholds_have_one_field_per_metric_with_the_tables_defaults() -> None:
    assert {f.name for f in fields(RAGEvaluationThresholds)} == set(THRESHOLD_METRICS)
    assert set(ALL) <= {f.name for f in fields(RAGEvaluationResult)}
    defaults = RAGEvaluationThresholds()
    assert all(getattr(defaults, name) == BY_NAME[name].threshold for name in THRESHOLD_METRICS)
    assert VERDICT_METRICS == ("faithfulness", "relevance", "answer_quality")


def test_phoenix_alerts_and_grafana_use_the_same_names() -> None:
    scores = {name: 0.5 for name in SCORES}
    result = RAGEvaluationResult(sampled=True, sample_key=None, question="q", tier="local", **scores)
    sample = RAGSample(1, 2, "q", "a", [Document("c")])
    annotated = {row["name"] for row in span_annotations(sample, result)} - {"eval_tier", "answer"}
    assert annotated == set(SCORES)
    assert set(Observation.of(result, 0.0).scores) == set(SCORES)
    assert {f"{name}_low" for name in SCORES} <= {rule.name for rule in default_rules()}
    assert ",".join(ALL) in dashboard_json()


def test_old_spellings_still_load_from_cache_entries_but_not_in_rules_files() -> None:
    old = RAGEvaluationResult.from_dict({"sampled": True, "sample_key": None, "question": "q", "recall": 0.4})
    assert old.context_recall == 0.4
    [rule] = load_rules({"rule": [{"type": "metric", "metric": "context_recall"}]})
    assert rule.name == "context_recall_low" and rule.threshold == BY_NAME["context_recall"].threshold
