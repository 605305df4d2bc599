"""`ragtriage demo`, the README's first command, end to end."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from ragtriage.cli import app
from ragtriage.demo import load_corpus


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
    assert phoenix.url in result.output
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
