"""Human labels and regression sets against a real `phoenix serve`: reviewers' labels posted through Phoenix's
REST API and read back by ``calibrate --from-phoenix`` and ``report``; traces pushed to a Phoenix dataset, read
back, gated by ``ci --phoenix-dataset`` and grown by ``synth --from-phoenix-dataset``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from typer.testing import CliRunner

import ragtriage
from ragtriage.cli import app
from ragtriage.dashboards.agreement import audit_agreement
from ragtriage.dashboards.sources import records_from_phoenix
from ragtriage.evaluator.calibration import load_calibration
from ragtriage.gate.phoenix_datasets import load_phoenix_dataset
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer

pytestmark = pytest.mark.phoenix

ANSWER = "Paris is the capital of France."
CONTEXTS = ["Paris is the capital and largest city of France.", "Lyon is a city in France."]
LOCAL_FAILS = {0, 1, 2, 3, 4, 5}  # the local judge fails these confidently ...
HUMAN_FAILS = {0, 1, 2, 3, 4, 6}  # ... a reviewer fails these: 5 is a false fail, 6 a missed one
AUDITOR_FAILS = LOCAL_FAILS | {7}  # the heavy judge, auditing every local decision, also fails 7


def question(i: int) -> str:
    return f"What is the capital of France? (case {i:02d})"


def case_of(body: dict[str, Any]) -> int:
    text = json.dumps(body["messages"])
    return int(text.split("(case ")[1][:2])


def local_judge(body: dict[str, Any]) -> Reply:
    fails = case_of(body) in LOCAL_FAILS
    return Reply(verdict_json(faithfulness=0.2 if fails else 0.95, confidence=0.95))


def heavy_judge(body: dict[str, Any]) -> Reply:
    passes = case_of(body) not in AUDITOR_FAILS
    claims = [{"claim": "Paris is the capital", "supported": passes, "context_index": 1 if passes else None}]
    return Reply(verdict_json(faithfulness=0.95 if passes else 0.1, claims=claims))


@dataclass
class Labelled:
    project: str
    roots: dict[int, str]  # case -> root span id
    local: JudgeServer
    env: dict[str, str]


@pytest.fixture(scope="module")
def labelled(phoenix: PhoenixServer) -> Iterator[Labelled]:
    """Twelve evaluated (and audited) traces in a fresh project, and a reviewer's label on each."""
    project = f"labels-{uuid.uuid4().hex[:8]}"
    with JudgeServer(default=local_judge) as local, JudgeServer(default=heavy_judge) as heavy:
        provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces")))
        ragtriage.instrument(
            tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, local_judge_url=local.url,
            heavy_judge_url=heavy.url, audit_rate=1.0, auto_instrument=False,
        )  # fmt: skip
        try:
            tracer = provider.get_tracer("app")
            roots = {}
            for i in range(12):
                with tracer.start_as_current_span(
                    "rag", attributes={"openinference.span.kind": "CHAIN", "input.value": question(i)}
                ) as root:
                    attributes = {"openinference.span.kind": "RETRIEVER"}
                    for n, doc in enumerate(CONTEXTS):
                        attributes[f"retrieval.documents.{n}.document.content"] = doc
                    with tracer.start_as_current_span("retrieve", attributes=attributes):
                        pass
                    root.set_attribute("output.value", ANSWER)
                roots[i] = f"{root.get_span_context().span_id:016x}"
            assert provider.force_flush(30_000)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                records = records_from_phoenix(phoenix.url, project)
                if len(records) == 12 and all(r.audit_verdict for r in records):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"evaluations or audits missing in Phoenix: {records}")
        finally:
            ragtriage.uninstrument()
        rows = [
            {
                "span_id": span_id,
                "name": "human_verdict",
                "annotator_kind": "HUMAN",
                "result": {"label": "fail" if i in HUMAN_FAILS else "pass"},
            }
            for i, span_id in roots.items()
        ]
        httpx.post(
            f"{phoenix.url}/v1/span_annotations", params={"sync": "true"}, json={"data": rows}
        ).raise_for_status()
        yield Labelled(project, roots, local, {"PHOENIX_COLLECTOR_ENDPOINT": phoenix.url})


def run(args: list[str], env: dict[str, str]) -> Any:
    result = CliRunner().invoke(app, args, env=env)
    return result


def test_calibrate_from_phoenix_measures_each_tier_against_the_reviewers(labelled: Labelled, tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    result = run(
        ["calibrate", "--from-phoenix", labelled.project, "--since", "1h", "--target-precision", "0.8", "-o", str(out)],
        labelled.env,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    local = data["tiers"]["local"]
    assert local["confusion"] == {
        "hallucinated": {"hallucinated": 5, "faithful": 1, "undecided": 0},
        "faithful": {"hallucinated": 1, "faithful": 5, "undecided": 0},
    }
    assert (local["precision"], local["recall"], local["kappa"]) == (0.8333, 0.8333, 0.6667)
    low, high = local["kappa_interval"]
    assert low < 0.6667 < high and low > -1 and high <= 1
    assert local["precision_interval"][0] < 0.8333 < local["precision_interval"][1]
    assert data["tiers"]["metric:faithfulness"]["n"] == 12
    auditor = data["tiers"]["auditor"]["confusion"]  # the heavy judge: fails 0-5 and 7; the reviewer 0-4 and 6
    assert auditor["hallucinated"]["hallucinated"] == 5 and auditor["faithful"]["hallucinated"] == 2
    # the file the runtime reads: faithfulness < 0.575 (between the 0.2 and 0.95 scores) reaches 80% precision
    calibration = load_calibration(out)
    assert calibration.faithfulness == 0.575 and calibration.confidence_threshold is None
    assert "local" in result.output and "12 human-labelled traces" in result.output


def test_calibrate_from_phoenix_with_no_labels_says_so(labelled: Labelled, tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    result = run(
        ["calibrate", "--from-phoenix", labelled.project, "--since", "2999-01-01", "-o", str(out)], labelled.env
    )
    assert result.exit_code == 0, result.output
    assert "no trace has a human_verdict label yet" in result.output
    assert load_calibration(out).faithfulness is None
    assert run(["calibrate", "-o", str(out)], labelled.env).exit_code != 0  # --labels or --from-phoenix


def test_report_shows_the_same_agreement(labelled: Labelled, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run(["report", "--project", labelled.project, "-o", str(out)], labelled.env)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "Each tier against its auditor" in page and "Against human labels" in page
    # local vs auditor: 11 of 12 agree (7 is the one the auditor fails)
    assert "<td>local</td><td>12</td><td>92% (" in page
    assert "<td>tier</td><td>local</td><td>12</td><td>12</td><td>83% (" in page
    assert "0.67 (" in page  # kappa with its interval
    # read back from Phoenix's audit_verdict annotations: the known rate, inside its interval
    local = audit_agreement(records_from_phoenix(labelled.env["PHOENIX_COLLECTOR_ENDPOINT"], labelled.project))["local"]
    assert (local.audits, local.agreed, local.fails, local.fails_confirmed) == (12, 11, 6, 6)
    low, high = local.agreement_interval
    assert low <= 11 / 12 <= high


def test_a_failing_production_trace_reaches_the_gate_in_two_commands(labelled: Labelled, tmp_path: Path) -> None:
    name = f"disputed-{uuid.uuid4().hex[:6]}"
    pushed = run(["dataset", "push", labelled.project, "--name", name, "--disagree", "human"], labelled.env)
    assert pushed.exit_code == 0, pushed.output
    assert "2 traces matched; added 2" in pushed.output
    items = {i.question: i for i in load_phoenix_dataset(labelled.env["PHOENIX_COLLECTOR_ENDPOINT"], name)}
    assert set(items) == {question(5), question(6)}
    false_fail, missed = items[question(5)], items[question(6)]
    assert (false_fail.label, missed.label) == ("pass", "fail")  # the reviewer's label, not ragtriage's
    assert false_fail.extra["label_source"] == "human" and false_fail.answer == ANSWER
    assert list(false_fail.contexts) == CONTEXTS
    assert false_fail.extra["source_span_id"] == labelled.roots[5]  # linked to the source span
    assert missed.extra["source_span_id"] == labelled.roots[6]

    env = {**labelled.env, "RAGTRIAGE_LOCAL_JUDGE_URL": labelled.local.url}
    json_path = tmp_path / "gate.json"
    gated = run(["ci", "--phoenix-dataset", name, "--n", "2", "--min-detection", "0.5", "--json", str(json_path)], env)
    assert gated.exit_code == 1, gated.output  # the local judge still gets both wrong: the gate fails
    report = json.loads(json_path.read_text())
    assert report["counts"]["evaluated"] == 2 and report["counts"]["caught"] == 0

    again = run(["dataset", "push", labelled.project, "--name", name, "--disagree", "human"], labelled.env)
    assert "(0 new)" in again.output  # a trace pushed twice is one example
    assert len(load_phoenix_dataset(labelled.env["PHOENIX_COLLECTOR_ENDPOINT"], name)) == 2


def test_push_filters_by_auditor_disagreement_verdict_and_tier(labelled: Labelled) -> None:
    endpoint = labelled.env["PHOENIX_COLLECTOR_ENDPOINT"]
    name = f"audited-{uuid.uuid4().hex[:6]}"
    pushed = run(["dataset", "push", labelled.project, "--name", name, "--disagree", "auditor"], labelled.env)
    assert pushed.exit_code == 0, pushed.output
    assert [i.question for i in load_phoenix_dataset(endpoint, name)] == [question(7)]
    fails = f"fails-{uuid.uuid4().hex[:6]}"
    run(["dataset", "push", labelled.project, "--name", fails, "--verdict", "fail", "--tier", "local"], labelled.env)
    assert sorted(i.question for i in load_phoenix_dataset(endpoint, fails)) == [
        question(i) for i in sorted(LOCAL_FAILS)
    ]
    none = run(["dataset", "push", labelled.project, "--name", "x", "--tier", "heavy"], labelled.env)
    assert none.exit_code == 1 and "0 traces matched" in none.output


def test_synth_adds_adversarial_variants_to_the_phoenix_dataset(labelled: Labelled) -> None:
    endpoint = labelled.env["PHOENIX_COLLECTOR_ENDPOINT"]
    name = f"grow-{uuid.uuid4().hex[:6]}"
    run(["dataset", "push", labelled.project, "--name", name, "--verdict", "pass"], labelled.env)
    before = load_phoenix_dataset(endpoint, name)
    result = run(["synth", "--from-phoenix-dataset", name, "--kinds", "unsupported_claim,negation_flip"], labelled.env)
    assert result.exit_code == 0, result.output
    after = load_phoenix_dataset(endpoint, name)
    variants = [i for i in after if i.perturbation is not None]
    assert len(after) == len(before) + len(variants) and variants
    assert {i.perturbation for i in variants} <= {"unsupported_claim", "negation_flip"}
    assert all(i.source_id in {b.id for b in before} for i in variants)
    claims = [i for i in variants if i.perturbation == "unsupported_claim"]
    assert claims and all(i.label == "hallucinated" for i in claims)


def test_filters_and_labels_without_a_server() -> None:
    from ragtriage.dashboards.sources import EvalRecord
    from ragtriage.gate.cli import parse_since
    from ragtriage.gate.phoenix_datasets import TraceFilter, label_of

    with pytest.raises(ValueError, match="disagree"):
        TraceFilter(disagree="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        TraceFilter(limit=0)
    fail = EvalRecord(tier="local", status="ok", verdict="fail")
    assert label_of(fail) == ("fail", "ragtriage")
    assert label_of(EvalRecord(tier="local", status="ok", verdict="fail", audit_verdict="pass")) == ("pass", "auditor")
    reviewed = EvalRecord(tier="local", status="ok", verdict="fail", audit_verdict="pass", human_verdict="fail")
    assert label_of(reviewed) == ("fail", "human")
    assert label_of(EvalRecord(tier="none", status="judge_error", verdict="uncertain")) is None
    assert TraceFilter(disagree="auditor").matches(EvalRecord("local", "ok", "fail", audit_verdict="pass"))
    assert not TraceFilter(disagree="human").matches(EvalRecord("local", "ok", "fail", human_verdict="fail"))
    assert TraceFilter(verdicts=frozenset({"fail"}), tiers=frozenset({"local"})).matches(fail)
    assert not TraceFilter(tiers=frozenset({"heavy"})).matches(fail)
    assert parse_since("2026-11-01").isoformat() == "2026-11-01T00:00:00+00:00"
