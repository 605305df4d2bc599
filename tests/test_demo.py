"""`ragtriage demo`, the README's first command, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ragtriage.cli import app
from ragtriage.demo import load_corpus
from ragtriage.testing.phoenix import PhoenixServer


def test_demo_without_phoenix_runs_the_free_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "RAGTRIAGE_LOCAL_JUDGE_URL", "RAGTRIAGE_HEAVY_JUDGE_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["demo", "--no-phoenix"])
    assert result.exit_code == 0, result.output
    _, items = load_corpus()
    assert f"{len(items)} traces evaluated" in result.output
    assert "free tiers" in result.output
    # the free tiers never fail a faithful answer of the bundled corpus
    faithful_row = next(line for line in result.output.splitlines() if "faithful" in line and "hallu" not in line)
    assert [int(x) for x in faithful_row.replace("│", " ").split()[1:]][1] == 0


@pytest.mark.phoenix
def test_demo_writes_annotations_into_phoenix(phoenix, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOENIX_COLLECTOR_ENDPOINT", phoenix.url)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert f"Open {phoenix.url}" in result.output
    assert dead_links(result.output) == []
    spans = httpx.get(
        f"{phoenix.url}/v1/projects/ragtriage-demo/spans", params={"parent_id": "null", "limit": 100}
    ).json()["data"]
    roots = [s for s in spans if s["name"] == "rag_query"]
    _, items = load_corpus()
    assert len(roots) == len(items)
    rows = httpx.get(
        f"{phoenix.url}/v1/projects/ragtriage-demo/span_annotations",
        params={"span_ids": [s["context"]["span_id"] for s in roots], "limit": 1000},
    ).json()["data"]
    verdicts = [r for r in rows if r["name"] == "answer"]
    assert len(verdicts) == len(items)
    assert {r["result"]["label"] for r in verdicts} == {"fail", "uncertain"}


#: The demo's example of a judge URL, printed as configuration to copy, not as a link.
EXAMPLE_URLS = {"http://localhost:8000/v1"}


def dead_links(output: str) -> list[str]:
    links = set(re.findall(r"https?://[^\s\],)]+", output)) - EXAMPLE_URLS
    dead = []
    for link in links:
        try:
            httpx.get(link, timeout=5).raise_for_status()
        except httpx.HTTPError:
            dead.append(link)
    return dead


@pytest.mark.phoenix
def test_the_demo_prints_no_link_to_the_phoenix_it_stopped() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OPENAI_", "RAGTRIAGE_"))}
    run = subprocess.run(
        [sys.executable, "-m", "ragtriage.cli", "demo"], env=env, capture_output=True, text=True, timeout=600
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "traces evaluated" in output
    assert dead_links(output) == []
    assert "Open http" not in output
    assert "ragtriage demo --keep-running" in " ".join(output.split())  # rich wraps lines


@pytest.mark.phoenix
def test_the_demo_runs_the_phoenix_of_its_own_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``/path/to/venv/bin/ragtriage demo`` without activating the venv: the first ``phoenix`` on PATH is another
    environment's (here one that cannot serve), not the one the phoenix extra installed next to ragtriage."""
    other = tmp_path / "other-env" / "bin"
    other.mkdir(parents=True)
    (other / "phoenix").write_text("#!/bin/sh\necho 'another environment: no serve here' >&2\nexit 3\n")
    (other / "phoenix").chmod(0o755)
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}{os.environ['PATH']}")
    with PhoenixServer(tmp_path / "phoenix") as phoenix:
        assert httpx.get(f"{phoenix.url}/v1/projects", timeout=10).status_code == 200
