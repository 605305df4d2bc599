"""Calibration numbers on a handmade set of 8 labelled items, checked against values computed by hand."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtriage import RAGEvaluationThresholds, RAGEvaluator
from ragtriage.cli import app
from ragtriage.gate.calibration import load_calibration
from ragtriage.testing import JudgeServer, Reply, verdict_json
from tests.test_gate import CLAIMS

LABELS = Path(__file__).parent / "data" / "calibration_labels.jsonl"
# (faithfulness, confidence) the scripted local judge gives each item, keyed by the id in its question.
LOCAL = {
    "H1": (0.1, 0.9),
    "H2": (0.2, 0.9),
    "H3": (0.6, 0.6),
    "H4": (0.8, 0.5),
    "F1": (0.9, 0.9),
    "F2": (0.95, 0.9),
    "F3": (0.5, 0.4),
    "F4": (0.85, 0.8),
}


def scripted(body: dict) -> Reply:
    item = re.search(r"\[([HF]\d)\]", body["messages"][1]["content"]).group(1)
    faithfulness, confidence = LOCAL[item]
    return Reply(verdict_json(faithfulness=faithfulness, confidence=confidence))


@pytest.fixture
def local() -> Iterator[JudgeServer]:
    with JudgeServer(default=scripted) as server:
        yield server


def test_calibrate_matches_hand_computed(local: JudgeServer, tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    result = CliRunner().invoke(
        app, ["calibrate", "--labels", str(LABELS), "-o", str(out), "--local-judge-url", local.url]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    # local tier cut at faithfulness 0.7: TP H1 H2 H3, FN H4, FP F3, TN F1 F2 F4
    loc = data["tiers"]["local"]
    assert loc["confusion"] == {
        "hallucinated": {"hallucinated": 3, "faithful": 1, "undecided": 0},
        "faithful": {"hallucinated": 1, "faithful": 3, "undecided": 0},
    }
    # po = 6/8, pe = (4*4 + 4*4)/64 = 0.5, kappa = (0.75 - 0.5) / 0.5
    assert (loc["accuracy"], loc["precision"], loc["recall"], loc["kappa"]) == (0.75, 0.75, 0.75, 0.5)
    # deterministic: only H1 (a year no context has) is decided; one class predicted -> kappa undefined
    det = data["tiers"]["deterministic"]
    assert (det["decided"], det["accuracy"], det["precision"], det["recall"], det["kappa"]) == (1, 1.0, 1.0, 0.25, None)
    assert det["confusion"]["faithful"]["undecided"] == 4
    # precision >= 0.9 with the best recall: cut at the midpoint 0.35 (flags H1, H2: precision 1, recall 0.5)
    # kept local verdicts at that cut agree 6/8 (c>=0.4), 5/7 (0.5), 5/6 (0.6), 5/5 (0.8): recommend 0.8
    assert data["recommended"] == {"confidence_threshold": 0.8, "thresholds": {"faithfulness": 0.35}}
    assert "kappa" in result.output

    calibration = load_calibration(out)
    kwargs = calibration.evaluator_kwargs()
    assert kwargs == {"thresholds": RAGEvaluationThresholds(faithfulness=0.35), "confidence_threshold": 0.8}
    evaluator = RAGEvaluator(**kwargs)
    assert evaluator.thresholds.faithfulness == 0.35 and evaluator.confidence_threshold == 0.8
    loaded = RAGEvaluator.from_calibration(out, sample_rate=1.0)
    assert (loaded.thresholds.faithfulness, loaded.confidence_threshold, loaded.sample_rate) == (0.35, 0.8, 1.0)
    from ragtriage.config import Config
    from ragtriage.runtime import build_evaluator

    built = build_evaluator(Config(calibration_file=str(out)))
    assert (built.thresholds.faithfulness, built.confidence_threshold) == (0.35, 0.8)


def test_calibrate_without_judge_recommends_nothing(tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    result = CliRunner().invoke(app, ["calibrate", "--labels", str(LABELS), "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert list(data["tiers"]) == ["deterministic"]
    assert data["recommended"] == {"confidence_threshold": None, "thresholds": {}}
    assert load_calibration(out).evaluator_kwargs() == {}


def test_load_calibration_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"recommended": {"confidence_threshold": 1.5, "thresholds": {}}}')
    with pytest.raises(ValueError, match=r"bad\.json: recommended confidence_threshold must be"):
        load_calibration(bad)
    bad.write_text("[]")
    with pytest.raises(ValueError, match="not a ragtriage calibration file"):
        load_calibration(bad)


def test_calibrate_budget_stop_covers_only_what_was_judged_and_says_so(tmp_path: Path) -> None:
    # heavy only: 1000 + 100 tokens at $0.15/$0.60 per 1M = $0.00021 per call; $0.0005 buys two calls
    reply = Reply(verdict_json(faithfulness=1.0, claims=CLAIMS), prompt_tokens=1000, completion_tokens=100)
    out = tmp_path / "cal.json"
    with JudgeServer(default=reply) as heavy:
        args = ["--heavy-judge-url", heavy.url, "--budget-usd", "0.0005", "--concurrency", "1"]
        result = CliRunner().invoke(app, ["calibrate", "--labels", str(LABELS), "-o", str(out), *args])
        assert len(heavy.requests) == 2
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["tiers"]["heavy"]["n"] == 2 and data["tiers"]["deterministic"]["n"] == 8
    assert "the budget stopped the heavy tier after 2 of 8 items" in " ".join(data["notes"])
    assert "after 2 of 8 items" in result.output
