"""The public surface: arguments, sampling, result types."""

from __future__ import annotations

import re

import pytest

import ragtriage
from ragtriage import RAGEvaluationResult, RAGEvaluationThresholds, RAGEvaluator
from ragtriage.evaluator.results import alert_severity
from ragtriage.testing import JudgeServer


def test_public_surface_is_listed() -> None:
    for name in ragtriage.__all__:
        assert hasattr(ragtriage, name), name


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"sample_rate": 1.5}, ValueError, "sample_rate"),
        ({"sample_rate": "0.5"}, TypeError, "sample_rate"),
        ({"confidence_threshold": -0.1}, ValueError, "confidence_threshold"),
        ({"thresholds": {"faithfulness": 0.7}}, TypeError, "thresholds"),
        ({"max_context_chars": 10}, ValueError, "max_context_chars"),
        ({"max_context_chars": 1.5}, TypeError, "max_context_chars"),
        ({"recent_results_size": 0}, ValueError, "recent_results_size"),
        ({"local_judge": "gpt-4o-mini"}, TypeError, "local_judge"),
        ({"heavy_judge": object()}, TypeError, "heavy_judge"),
        ({"cache": {}}, TypeError, "cache"),
        ({"cost_tracker": 3}, TypeError, "cost_tracker"),
        ({"budget_usd_per_hour": -1}, ValueError, "budget_usd_per_hour"),
        ({"alert_sinks": [print]}, TypeError, "alert_sinks"),
        ({"citation_pattern": "[unclosed"}, ValueError, "citation_pattern"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs: dict, error: type[Exception], named: str) -> None:
    with pytest.raises(error, match=re.escape(named)):
        RAGEvaluator(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"faithfulness": 1.2}, "faithfulness"),
        ({"context_recall": -0.1}, "context_recall"),
        ({"benefit_to_cost": float("nan")}, "benefit_to_cost"),
    ],
)
def test_bad_thresholds_raise(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RAGEvaluationThresholds(**kwargs)


def test_thresholds_defaults_match_synapsekit() -> None:
    t = RAGEvaluationThresholds()
    assert (
        t.context_recall,
        t.context_precision,
        t.relevance,
        t.answer_quality,
        t.faithfulness,
        t.benefit_to_cost,
    ) == (
        0.65,
        0.65,
        0.65,
        0.70,
        0.70,
        1.0,
    )


async def test_bad_evaluate_arguments_raise() -> None:
    evaluator = RAGEvaluator(sample_rate=1.0)
    with pytest.raises(TypeError, match="question"):
        await evaluator.evaluate(None, "a", ["c"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="contexts"):
        await evaluator.evaluate("q", "a", "a single string is not a list of contexts")
    with pytest.raises(TypeError, match=re.escape("contexts[1]")):
        await evaluator.evaluate("q", "a", ["ok", b"bytes"])  # type: ignore[list-item]


def test_should_sample_is_deterministic_and_close_to_the_rate() -> None:
    evaluator = RAGEvaluator(sample_rate=0.2)
    keys = [f"request-{i}" for i in range(20_000)]
    first = [evaluator.should_sample(k) for k in keys]
    assert first == [RAGEvaluator(sample_rate=0.2).should_sample(k) for k in keys]
    share = sum(first) / len(keys)
    # binomial sd = sqrt(.2*.8/20000) = 0.0028; 5 sd
    assert abs(share - 0.2) < 0.015
    assert not any(RAGEvaluator(sample_rate=0.0).should_sample(k) for k in keys[:1000])
    assert all(RAGEvaluator(sample_rate=1.0).should_sample(k) for k in keys[:1000])


def test_int_keys_follow_trace_id_ratio_based() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    evaluator = RAGEvaluator(sample_rate=0.3)
    otel = TraceIdRatioBased(0.3)
    for trace_id in range(1, 2**128, 2**121 + 12345):
        expected = otel.should_sample(None, trace_id, "span").decision == Decision.RECORD_AND_SAMPLE
        assert evaluator.should_sample(trace_id) is expected


async def test_unsampled_returns_at_once_without_calling_a_judge(judge_server: JudgeServer) -> None:
    evaluator = RAGEvaluator(local_judge=ragtriage.LLMJudge(model="m", base_url=judge_server.url), sample_rate=0.0)
    result = await evaluator.evaluate("q", "a", ["c"], sample_key="k1")
    assert result.sampled is False
    assert result.sample_key == "k1"
    assert result.tier is None and result.faithfulness is None
    assert judge_server.requests == []
    assert evaluator.recent_results == [] and evaluator.summary()["not_sampled"] == 1


def test_result_round_trips_through_dict() -> None:
    result = RAGEvaluationResult(
        sampled=True,
        sample_key="k",
        question="q",
        faithfulness=0.5,
        verdict="fail",
        tier="heavy",
        alerts=[ragtriage.RAGAlert("faithfulness", "warning", "m", "r", 0.5, 0.7)],
        suggestions=[ragtriage.RAGRemediationSuggestion("faithfulness", "a", "b")],
    )
    assert RAGEvaluationResult.from_dict(result.to_dict()) == result
    with pytest.raises(AttributeError):
        result.verdict = "pass"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "threshold", "severity"),
    [(0.36, 0.7, "warning"), (0.35, 0.7, "warning"), (0.34, 0.7, "critical"), (0.0, 0.7, "critical")],
)
def test_alert_severity_rule(value: float, threshold: float, severity: str) -> None:
    assert alert_severity(value, threshold) == severity


def test_history_is_bounded() -> None:
    import asyncio

    evaluator = RAGEvaluator(sample_rate=1.0, recent_results_size=3, cache=False)

    async def run() -> None:
        for i in range(5):
            await evaluator.evaluate(f"q{i}", "", ["c"])

    asyncio.run(run())
    assert [r.question for r in evaluator.recent_results] == ["q2", "q3", "q4"]
    assert evaluator.last_result is not None and evaluator.last_result.question == "q4"
    assert evaluator.summary()["evaluations"] == 3
