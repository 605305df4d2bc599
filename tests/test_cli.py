"""The command line as a user meets it: help that reads well, errors that name the option, honest exit codes."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ragtriage import RAGEvaluator
from ragtriage.cli import app, help_text
from tests.receivers import Receiver

MINI = Path(__file__).parent / "data" / "release_gate_mini.jsonl"
#: Every variable that could point at a sink, a queue or a judge these tests did not start.
FOREIGN = (
    "RAGTRIAGE_SLACK_WEBHOOK_URL",
    "RAGTRIAGE_PAGERDUTY_ROUTING_KEY",
    "RAGTRIAGE_PAGERDUTY_URL",
    "RAGTRIAGE_SMTP_HOST",
    "RAGTRIAGE_SMTP_TO",
    "RAGTRIAGE_SMTP_FROM",
    "RAGTRIAGE_ALERT_WEBHOOK_URL",
    "RAGTRIAGE_QUEUE_URL",
    "RAGTRIAGE_EVALUATE_IN",
    "RAGTRIAGE_LOCAL_JUDGE_URL",
    "RAGTRIAGE_HEAVY_JUDGE_URL",
    "OPENAI_API_KEY",
)


@pytest.fixture(autouse=True)
def no_foreign_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FOREIGN:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """``worker`` configures logging as a process of its own would (a root handler, quieter HTTP loggers): undo it."""
    loggers = [logging.getLogger(name) for name in ("", "httpx", "httpx2", "httpcore", "openai")]
    saved = [(logger, logger.handlers[:], logger.level) for logger in loggers]
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def flat(text: str) -> str:
    """The output with its line wrapping undone."""
    return " ".join(text.split())


def all_commands() -> list[list[str]]:
    """Every command path, e.g. ``["judge", "serve"]``, from the click tree typer builds."""
    paths = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_help_shows_brackets_as_written() -> None:
    code, output = run("judge", "serve", "--help")
    assert code == 0
    assert "pip install 'ragtriage[vllm]'" in flat(output)


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "ragtriage")
def test_every_help_reads_as_plain_text(path: list[str]) -> None:
    code, output = run(*path, "--help")
    assert code == 0, output
    for markup in ("``", "::", ":func:", ":class:", ":meth:", "\\ "):
        assert markup not in output, f"{markup!r} in the help of {' '.join(path)}"


def test_the_command_list_shows_each_summary_whole() -> None:
    _, output = run("--help")
    assert "..." not in output.split("Commands:")[1]
    assert "a check of a server." in flat(output)


def test_examples_keep_their_lines() -> None:
    _, output = run("judge", "check", "--help")
    lines = output.splitlines()
    start = lines.index("  Example:")
    assert "$ ragtriage judge check http://127.0.0.1:8000/v1" in lines[start + 2]
    assert lines[start + 3].strip().startswith("ok    models:")  # one line each, as written


def test_help_text_turns_rest_into_plain_text() -> None:
    doc = """Run :func:`~ragtriage.instrument` with ``--flag``, in ``worker``\\ s.

    More about :class:`ragtriage.Config`,
    wrapped.

    Example::

        $ one
        $ two
    """
    assert help_text(doc) == (
        "Run instrument with --flag, in workers.\n\nMore about ragtriage.Config,\nwrapped.\n\n"
        "Example:\n\n\b\n    $ one\n    $ two"
    )


def test_worker_without_a_queue_names_the_option() -> None:
    code, output = run("worker")
    assert code == 2
    assert "'--queue'" in output and "RAGTRIAGE_QUEUE_URL" in flat(output)
    assert "evaluate_in" not in output


def test_worker_with_a_bad_queue_names_the_option() -> None:
    code, output = run("worker", "--queue", "localhost:6379")
    assert code == 2
    assert "Invalid value for '--queue'" in output and "must be a URL" in output


def test_alerts_test_exits_0_only_when_every_sink_worked(monkeypatch: pytest.MonkeyPatch) -> None:
    with Receiver() as webhook:
        monkeypatch.setenv("RAGTRIAGE_ALERT_WEBHOOK_URL", webhook.url)
        code, output = run("alerts", "test")
        assert code == 0, output
        assert re.search(r"webhook\s+ok", output) and len(webhook.received) == 1


def test_alerts_test_fails_on_a_sink_the_environment_names_but_cannot_have(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTRIAGE_SLACK_WEBHOOK_URL", "hooks.slack.com/services/T000/B000/XXXX")  # no scheme
    code, output = run("alerts", "test")
    assert code == 1
    assert "slack" in output and "NOT SET UP" in output and "RAGTRIAGE_SLACK_WEBHOOK_URL: must be a URL" in flat(output)
    assert "XXXX" not in output  # a webhook URL is a secret

    monkeypatch.delenv("RAGTRIAGE_SLACK_WEBHOOK_URL")
    monkeypatch.setenv("RAGTRIAGE_SMTP_HOST", "127.0.0.1")  # ... but no sender and no recipients
    code, output = run("alerts", "test")
    assert code == 1
    assert "email" in output and "recipients must be a non-empty list" in flat(output)


def test_ci_never_passes_a_run_that_decided_nothing(tmp_path: Path) -> None:
    # Faithful items only: the free tiers alone only ever prove fails, so none is decided.
    faithful = [line for line in MINI.read_text().splitlines() if json.loads(line)["label"] == "faithful"]
    dataset, report = tmp_path / "faithful.jsonl", tmp_path / "report.json"
    dataset.write_text("\n".join(faithful) + "\n")
    n = str(len(faithful))
    code, output = run("ci", "--dataset", str(dataset), "--n", n, "--adversarial-share", "0", "--json", str(report))
    data = json.loads(report.read_text())
    assert (data["counts"]["evaluated"], data["counts"]["decided"]) == (len(faithful), 0)
    assert code == 1
    assert "## ragtriage ci: ❌ failed" in output and "passed" not in output.split("|")[0]
    decided = next(g for g in data["gates"] if g["name"] == "decided")
    assert not decided["passed"] and decided["detail"].startswith(f"0 of {len(faithful)} evaluated items decided")


def results_jsonl(tmp_path: Path) -> Path:
    """Real results of the free tiers: one answer they fail, one they cannot decide."""
    contexts = ["The Harbor Bridge opened in 1932 after six years of construction."]

    async def evaluate() -> list[dict]:
        evaluator = RAGEvaluator(sample_rate=1.0)
        rows = []
        for i, answer in enumerate(["The Harbor Bridge opened in 1945.", "It opened in 1932."]):
            result = await evaluator.evaluate("When did the bridge open?", answer, contexts, sample_key=f"{i + 1:032x}")
            rows.append(result.to_dict())
        await evaluator.aclose()
        return rows

    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in asyncio.run(evaluate())))
    return path


def test_report_says_why_each_worst_trace_is_there(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    code, output = run("report", "--jsonl", str(results_jsonl(tmp_path)), "--out", str(out))
    assert code == 0, output
    page = out.read_text(encoding="utf-8")
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", page)
    assert header is not None and "<th>why</th>" in header.group(1)
    rows = re.findall(r"<tr><td[^>]*>(\w+)</td><td class=\"q\">([^<]*)</td>", page)
    why = {verdict: html.unescape(reason) for verdict, reason in rows}
    assert "'1945', found in no context" in why["fail"]
    assert "free tiers could not decide" in why["uncertain"]


def test_report_without_plotly_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    hide_plotly = "import sys; sys.modules['plotly'] = None; from ragtriage.cli import app; app()"
    out = tmp_path / "report.html"
    run_ = subprocess.run(
        [sys.executable, "-c", hide_plotly, "report", "--jsonl", str(results_jsonl(tmp_path)), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run_.returncode == 2
    assert run_.stderr.strip().splitlines() == [
        "error: the report needs plotly, in the report extra: pip install 'ragtriage[report]'"
    ]
    assert not out.exists()
