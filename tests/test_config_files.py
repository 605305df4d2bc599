"""The files a configuration names (alert rules, calibration): the environment never stops the app, code gets
ValueError naming the argument, and a rules file is checked in full when it is read."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

import ragtriage
from ragtriage import Config, RAGEvaluationThresholds
from ragtriage.alerts import RulesFileError, default_rules, load_rules
from ragtriage.instrumentation import installed_processor, installed_runtime
from tests.test_span_processor import rag_request

BAD_THRESHOLD = '[[rule]]\ntype = "metric"\nmetric = "faithfulness"\nthreshold = "high"\n'
GOOD_RULES = '[[rule]]\ntype = "metric"\nmetric = "faithfulness"\nthreshold = 0.4\n'
CALIBRATION = {"recommended": {"thresholds": {"faithfulness": 0.35}, "confidence_threshold": 0.8}}


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("RAGTRIAGE_ALERT_RULES_FILE", "RAGTRIAGE_CALIBRATION_FILE", "RAGTRIAGE_EVALUATE_IN"):
        monkeypatch.delenv(name, raising=False)
    yield
    ragtriage.uninstrument()


def broken_files(tmp_path: Path) -> dict[str, Path]:
    """One missing and two malformed files of each kind."""
    files = {
        "missing": tmp_path / "nowhere.toml",
        "not toml": tmp_path / "garbage.toml",
        "bad threshold": tmp_path / "rules.toml",
        "not json": tmp_path / "garbage.json",
        "no recommendation": tmp_path / "calibration.json",
    }
    files["not toml"].write_text("this is = = not toml")
    files["bad threshold"].write_text(BAD_THRESHOLD)
    files["not json"].write_text("{")
    files["no recommendation"].write_text(json.dumps({"thresholds": {}}))
    return files


RULES_CASES = ("missing", "not toml", "bad threshold")
CALIBRATION_CASES = ("missing", "not json", "no recommendation")


def evaluate_one(provider: TracerProvider) -> None:
    """The app runs and its trace is evaluated: the environment did not stop anything."""
    rag_request(provider)
    processor = installed_processor()
    assert processor is not None and processor.force_flush(30_000)
    runtime = installed_runtime()
    assert runtime is not None and runtime.evaluator is not None
    [result] = runtime.evaluator.history
    assert result.status == "ok"


@pytest.mark.parametrize("case", RULES_CASES)
def test_a_broken_rules_file_in_the_environment_warns_and_the_built_in_rules_run(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAGTRIAGE_ALERT_RULES_FILE", str(broken_files(tmp_path)[case]))
    provider = TracerProvider()
    with caplog.at_level(logging.WARNING, logger="ragtriage"):
        ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False)
    [warning] = [r.getMessage() for r in caplog.records if "RAGTRIAGE_ALERT_RULES_FILE" in r.getMessage()]
    assert "using the built-in alert rules" in warning
    runtime = installed_runtime()
    assert runtime is not None and runtime.alerts is not None
    built_in = [rule.name for rule in default_rules()]
    assert [rule.name for rule in runtime.alerts.rules] == [*built_in, "dropped_samples_high"]
    evaluate_one(provider)


@pytest.mark.parametrize("case", CALIBRATION_CASES)
def test_a_broken_calibration_file_in_the_environment_warns_and_the_thresholds_stay(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAGTRIAGE_CALIBRATION_FILE", str(broken_files(tmp_path)[case]))
    provider = TracerProvider()
    with caplog.at_level(logging.WARNING, logger="ragtriage"):
        ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False)
    [warning] = [r.getMessage() for r in caplog.records if "RAGTRIAGE_CALIBRATION_FILE" in r.getMessage()]
    assert "using the uncalibrated thresholds" in warning
    runtime = installed_runtime()
    assert runtime is not None and runtime.evaluator is not None
    assert runtime.evaluator.thresholds == RAGEvaluationThresholds()
    evaluate_one(provider)


def test_a_broken_file_in_the_environment_never_stops_an_evaluator_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = broken_files(tmp_path)
    monkeypatch.setenv("RAGTRIAGE_ALERT_RULES_FILE", str(files["bad threshold"]))
    monkeypatch.setenv("RAGTRIAGE_CALIBRATION_FILE", str(files["not json"]))
    provider = TracerProvider()
    ragtriage.instrument(
        tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False, evaluate_in="process"
    )
    rag_request(provider)
    processor = installed_processor()
    assert processor is not None and processor.force_flush(60_000)
    # The child read the same environment: it warned too, started once and evaluated the trace.
    assert (processor.stats["child_starts"], processor.stats["child_ok"]) == (1, 1)


def test_the_files_are_read_in_full_when_only_the_configuration_is_imported(tmp_path: Path) -> None:
    files = broken_files(tmp_path)
    script = (
        "import sys\n"
        "from ragtriage.config import Config\n"
        "for name, path in (('alert_rules_file', sys.argv[1]), ('calibration_file', sys.argv[2])):\n"
        "    try:\n"
        "        Config(**{name: path})\n"
        "    except ValueError as exc:\n"
        "        print(exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(files["bad threshold"]), str(files["no recommendation"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    rules, calibration = run.stdout.splitlines()
    assert rules.startswith("alert_rules_file is not usable") and "threshold must be a number" in rules
    assert calibration.startswith("calibration_file is not usable") and "not a ragtriage calibration" in calibration


def test_good_files_in_the_environment_are_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rules.toml").write_text(GOOD_RULES)
    (tmp_path / "calibration.json").write_text(json.dumps(CALIBRATION))
    monkeypatch.setenv("RAGTRIAGE_ALERT_RULES_FILE", str(tmp_path / "rules.toml"))
    monkeypatch.setenv("RAGTRIAGE_CALIBRATION_FILE", str(tmp_path / "calibration.json"))
    ragtriage.instrument(tracer_provider=TracerProvider(), write_back=False, auto_instrument=False)
    runtime = installed_runtime()
    assert runtime is not None and runtime.evaluator is not None and runtime.alerts is not None
    assert runtime.evaluator.thresholds.faithfulness == 0.35
    rule = runtime.alerts.rules[0]
    assert (rule.name, rule.threshold) == ("faithfulness_low", 0.4)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argument", "case", "message"),
    [
        ("alert_rules_file", "missing", r"alert_rules_file is not usable: .*nowhere.toml: no such file"),
        ("alert_rules_file", "not toml", r"alert_rules_file is not usable: .*garbage.toml: not valid TOML"),
        (
            "alert_rules_file",
            "bad threshold",
            r"alert_rules_file .*rules.toml: rule\[0\] \(metric\): .*threshold must be a number >= 0, got 'high'",
        ),
        ("calibration_file", "missing", r"calibration_file is not usable: .*nowhere.toml: no such file"),
        ("calibration_file", "not json", r"calibration_file is not usable: .*garbage.json: not a ragtriage"),
        ("calibration_file", "no recommendation", r"calibration_file is not usable: .*calibration.json"),
    ],
)
def test_a_broken_file_in_code_is_a_value_error_naming_the_argument(
    argument: str, case: str, message: str, tmp_path: Path
) -> None:
    path = str(broken_files(tmp_path)[case])
    with pytest.raises(ValueError, match=message):
        ragtriage.instrument(tracer_provider=TracerProvider(), auto_instrument=False, **{argument: path})
    assert installed_processor() is None
    with pytest.raises(ValueError, match=message):
        Config(**{argument: path})
    with pytest.raises(ValueError, match=message):
        Config.from_env(**{argument: path})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\ntype = "fail_share"\nlimit = "0.3"\n', r"rule\[0\] \(fail_share\): .*limit must be a number"),
        ('[[rule]]\ntype = "fail_share"\nlimit = 30\n', r"rule\[0\] \(fail_share\): .*limit must be in \[0, 1\]"),
        ('[[rule]]\ntype = "metric"\nmetric = "faithfulness"\nthreshold = -1\n', r"threshold must be a number >= 0"),
        ('[[rule]]\ntype = "metric"\nmetric = "faithfulness"\nquantile = 1.5\n', r"quantile must be in \[0, 1\]"),
        ('[[rule]]\ntype = "drift"\njs_limit = 0\n', r"rule\[0\] \(drift\): .*js_limit must be > 0"),
        ('[[rule]]\ntype = "drift"\nmetric = "vibes"\n', r"rule\[0\] \(drift\): .*metric must be one of"),
        ('[[rule]]\ntype = "dropped"\nlimit = 2\n', r"rule\[0\] \(dropped\): .*limit must be in \[0, 1\]"),
        ('[[rule]]\ntype = "budget"\nlimit = true\n', r"rule\[0\] \(budget\): .*limit must be a number"),
        ('[[rule]]\ntype = "budget"\nwindow_size = 5\n', r"rule\[0\]: unknown key\(s\) window_size"),
        ('[[rule]]\ntype = "heavy_share"\nname = 3\n', r"rule\[0\] \(heavy_share\): rule name must be a non-empty"),
        ('[[rule]]\ntype = "heavy_share"\nmin_samples = 0\n', r"min_samples must be a positive int"),
        ('[[rule]]\ntype = "heavy_share"\nwindow_minutes = "5"\n', r"rule\[0\]: window_minutes must be a number"),
        ("[defaults]\nwindow_size = 2.5\n", r"\[defaults\]: .*window_size must be a positive int"),
        ("[defaults]\nwindow = 5\n", r"\[defaults\]: unknown key\(s\) window;"),
        ('defaults = "all"\n', r"\[defaults\] must be a table"),
        ("[rules]\nx = 1\n", r"top level: unknown key\(s\) rules;"),
        ("rule = [1, 2]\n", r"rule must be an array of tables"),
        (
            '[defaults]\nheavy_share_limit = 0.2\n\n[[rule]]\ntype = "fail_share"\n',
            r"\[defaults\]: heavy_share_limit set the built-in rules' limits",
        ),
        ("[defaults]\nfail_share_limit = 3\n", r"\[defaults\]: .*limit must be in \[0, 1\]"),
    ],
)
def test_a_rules_file_is_checked_in_full_and_errors_name_file_rule_and_key(
    text: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesFileError, match=message) as raised:
        load_rules(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_a_dropped_rule_is_checked_where_it_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\ntype = "dropped"\nlimit = "lots"\n')
    with pytest.raises(RulesFileError, match=r"rule\[0\] \(dropped\)"):
        load_rules(path)  # no drop counters: a worker skips the rule, but a typo in it is still found
    path.write_text('[[rule]]\ntype = "dropped"\nname = "drops"\nlimit = 0.1\n')
    [rule] = load_rules(path, drop_counters=lambda: (0, 0))
    assert (rule.name, rule.limit) == ("drops", 0.1)  # type: ignore[attr-defined]


def test_an_alert_sink_the_environment_cannot_have_is_left_out_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("SMTP_TO", "SMTP_FROM", "SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY"):
        monkeypatch.delenv(f"RAGTRIAGE_{name}", raising=False)
    monkeypatch.setenv("RAGTRIAGE_SMTP_HOST", "127.0.0.1")  # no sender, no recipients: no email sink can be made
    provider = TracerProvider()
    with caplog.at_level(logging.WARNING, logger="ragtriage"):
        ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, write_back=False, auto_instrument=False)
    assert "the email alert sink is off" in caplog.text and "RAGTRIAGE_SMTP_*" in caplog.text
    runtime = installed_runtime()
    assert runtime is not None and runtime.alerts is not None
    assert [sink.name for sink in runtime.alerts.sinks] == ["log"]
    evaluate_one(provider)
