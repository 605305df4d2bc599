"""The setup Phoenix users already have (#23): `phoenix.otel.register()`, the app's latency as Phoenix computes it,
an app that just ends, and the verdict first on each row of the traces list.

Against the session's real `phoenix serve` (a free port, not 6006), with no PHOENIX_* variables.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from phoenix.otel import register

import ragtriage
from ragtriage.dashboards.sources import phoenix_project_url
from ragtriage.instrumentation import installed_processor
from ragtriage.instrumentation.instrument import installed_runtime
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer
from tests.test_dashboards_report import Page, assert_not_blank
from tests.test_phoenix import annotations, app_provider, rag_request
from tests.test_phoenix_review import chromium, rendered_traces, timed_request

pytestmark = pytest.mark.phoenix
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project() -> str:
    return f"setup-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _no_phoenix_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("PHOENIX_", "OTEL_")):
            monkeypatch.delenv(name)
    yield
    ragtriage.uninstrument()


def graphql(phoenix: PhoenixServer, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(f"{phoenix.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def project_id(phoenix: PhoenixServer, project: str) -> str:
    return httpx.get(f"{phoenix.url}/v1/projects/{project}").json()["data"]["id"]


def spans_of(phoenix: PhoenixServer, project: str, trace_id: int) -> list[dict[str, Any]]:
    query = "query($id:ID!,$t:ID!){node(id:$id){... on Project{trace(traceId:$t){latencyMs spans(first:100){edges{node{name spanKind spanId parentId}}}}}}}"  # noqa: E501
    found = graphql(phoenix, query, id=project_id(phoenix, project), t=f"{trace_id:032x}")["node"]["trace"]
    return [edge["node"] for edge in found["spans"]["edges"]] if found else []


# -- 1. phoenix.otel.register() ---------------------------------------------------------------------------------


def test_register_keeps_its_exporter_and_write_back_goes_where_its_spans_go(
    phoenix: PhoenixServer, project: str
) -> None:
    provider = register(
        endpoint=f"{phoenix.url}/v1/traces", project_name=project, headers={"X-Team": "search"}, api_key="k-123",
        set_global_tracer_provider=False, verbose=False,
    )  # fmt: skip
    default = provider._default_processor
    ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, auto_instrument=False)

    assert provider._default_processor is default  # register()'s exporter is still there, and still running
    runtime = installed_runtime()
    assert runtime is not None and runtime.pipeline is not None
    writer = runtime.pipeline.writer
    assert (writer.base_url, writer.project_name) == (phoenix.url, project)  # not localhost:6006, not "default"
    assert writer._headers == {"x-team": "search", "authorization": "Bearer k-123"}

    trace_id, root_id, _ = rag_request(provider, answer="Paris has been the capital since 1794.")
    processor = installed_processor()
    assert processor is not None and processor.force_flush(30_000)
    found = annotations(phoenix, project, root_id)  # the app's own root span reached Phoenix ...
    assert found["answer"]["result"]["label"] == "fail"  # ... and carries the verdict
    spans = spans_of(phoenix, project, trace_id)
    evaluator = [s for s in spans if s["spanKind"] == "evaluator"]
    assert len(evaluator) == 1 and evaluator[0]["parentId"] == f"{root_id:016x}", spans
    assert {"rag", "retrieve"} <= {s["name"] for s in spans}
    assert runtime.pipeline.counts["evaluations_ok"] == 1 and runtime.pipeline.counts["write_back_failed"] == 0
    provider.shutdown()


def test_explicit_settings_win_and_force_flush_keeps_to_its_timeout(phoenix: PhoenixServer, project: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens: write-back retries
    provider = register(
        endpoint=f"{phoenix.url}/v1/traces", project_name=project, set_global_tracer_provider=False, verbose=False
    )
    ragtriage.instrument(tracer_provider=provider, endpoint=nowhere, sample_rate=1.0, auto_instrument=False)
    runtime = installed_runtime()
    assert runtime is not None and runtime.pipeline is not None
    assert runtime.pipeline.writer.base_url == nowhere
    rag_request(provider)
    processor = installed_processor()
    assert processor is not None
    started = time.monotonic()
    assert processor.force_flush(300) is False  # the write-back is still retrying
    assert time.monotonic() - started < 3  # 0.3 s asked; a generous bound for a loaded machine, not 30 s
    provider.shutdown()


def test_a_grpc_register_keeps_its_exporter_and_says_where_write_back_goes(
    caplog: pytest.LogCaptureFixture, project: str
) -> None:
    provider = register(
        endpoint="http://127.0.0.1:4317", protocol="grpc", project_name=project, api_key="k-9",
        set_global_tracer_provider=False, verbose=False,
    )  # fmt: skip
    default = provider._default_processor
    with caplog.at_level(logging.WARNING, logger="ragtriage"):
        ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, auto_instrument=False)
    assert provider._default_processor is default
    runtime = installed_runtime()
    assert runtime is not None and runtime.pipeline is not None
    writer = runtime.pipeline.writer
    # OTLP/gRPC says nothing of Phoenix's HTTP port: the configured endpoint, and a line saying so; the key is kept
    assert (writer.base_url, writer.project_name) == ("http://localhost:6006", project)
    assert writer._headers == {"authorization": "Bearer k-9"}
    assert [r.getMessage() for r in caplog.records if "not Phoenix's HTTP endpoint" in r.getMessage()], caplog.text
    assert "k-9" not in caplog.text
    ragtriage.uninstrument()
    provider.shutdown()


def test_the_environment_is_explicit_too(monkeypatch: pytest.MonkeyPatch, project: str) -> None:
    """An app exporting through an OTel Collector names Phoenix in PHOENIX_COLLECTOR_ENDPOINT: that wins."""
    monkeypatch.setenv("PHOENIX_COLLECTOR_ENDPOINT", "http://phoenix.internal:6006")
    provider = register(
        endpoint="http://otel-collector:4318/v1/traces", project_name=project, set_global_tracer_provider=False,
        verbose=False,
    )  # fmt: skip
    ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, auto_instrument=False)
    runtime = installed_runtime()
    assert runtime is not None and runtime.pipeline is not None
    assert runtime.pipeline.writer.base_url == "http://phoenix.internal:6006"
    ragtriage.uninstrument()
    provider.shutdown()


# -- 2. the app's latency --------------------------------------------------------------------------------------

QUANTILES = "query($id:ID!){node(id:$id){... on Project{p50:latencyMsQuantile(probability:0.5) p99:latencyMsQuantile(probability:0.99) traceCount}}}"  # noqa: E501


def test_the_apps_latency_in_phoenix_is_the_same_with_ragtriage_on_as_off(phoenix: PhoenixServer) -> None:
    on, off = f"latency-on-{uuid.uuid4().hex[:6]}", f"latency-off-{uuid.uuid4().hex[:6]}"
    with_ragtriage, without = app_provider(phoenix, on), app_provider(phoenix, off)
    ragtriage.instrument(tracer_provider=with_ragtriage, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False)
    start = time.time_ns() - 60 * 10**9  # a minute ago: an EVALUATOR span timed "now" would add a minute
    answers = ["Paris has been the capital since 1794.", "Paris is the capital of France."] * 3
    roots, plain = [], []
    for i, answer in enumerate(answers):
        duration = 3 + 7 * i  # 3, 10, ... 38 ms
        roots.append(timed_request(with_ragtriage, start + i * 10**9, duration, answer))
        plain.append(timed_request(without, start + i * 10**9, duration, answer)[0])
    processor = installed_processor()
    assert processor is not None and processor.force_flush(30_000)
    assert with_ragtriage.force_flush(30_000) and without.force_flush(30_000)

    for trace_id, root_id in roots:  # every evaluation is in, and reachable from its trace
        annotations(phoenix, on, root_id)
        deadline = time.monotonic() + 20
        while not any(s["spanKind"] == "evaluator" for s in spans_of(phoenix, on, trace_id)):
            assert time.monotonic() < deadline, "the EVALUATOR span never arrived"
            time.sleep(0.1)
        evaluator = next(s for s in spans_of(phoenix, on, trace_id) if s["spanKind"] == "evaluator")
        assert evaluator["parentId"] == f"{root_id:016x}"
    quantiles_on = graphql(phoenix, QUANTILES, id=project_id(phoenix, on))["node"]
    quantiles_off = graphql(phoenix, QUANTILES, id=project_id(phoenix, off))["node"]
    assert quantiles_on == quantiles_off, (quantiles_on, quantiles_off)
    assert quantiles_on["traceCount"] == len(answers)
    latency = "query($id:ID!,$t:ID!){node(id:$id){... on Project{trace(traceId:$t){latencyMs}}}}"
    per_trace = [
        [graphql(phoenix, latency, id=project_id(phoenix, p), t=f"{t:032x}")["node"]["trace"]["latencyMs"] for t in ids]
        for p, ids in ((on, [t for t, _ in roots]), (off, plain))
    ]
    assert per_trace[0] == per_trace[1]
    assert per_trace[0] == pytest.approx([3 + 7 * i for i in range(len(answers))], abs=0.01)
    with_ragtriage.shutdown()
    without.shutdown()


# -- 3. an app that just ends ---------------------------------------------------------------------------------

APP_THAT_JUST_ENDS = textwrap.dedent(
    """
    import sys
    from phoenix.otel import register
    import ragtriage
    from tests.test_phoenix import rag_request

    url, project = sys.argv[1], sys.argv[2]
    register(endpoint=url + "/v1/traces", project_name=project, verbose=False)  # the global provider
    provider = ragtriage.instrument(sample_rate=1.0, auto_instrument=False)
    for i in range(10):
        trace_id, root_id, _ = rag_request(provider, answer=f"Paris has been the capital since {1790 + i}.")
        print(f"{root_id:016x}", flush=True)
    # no shutdown(), no uninstrument(): the script just ends
    """
)


def test_an_app_that_just_ends_flushes_its_samples_without_a_traceback(phoenix: PhoenixServer, project: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "RAGTRIAGE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", APP_THAT_JUST_ENDS, phoenix.url, project],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr[-3000:]
    roots = done.stdout.split()
    assert len(roots) == 10
    for root in roots:
        verdict = annotations(phoenix, project, int(root, 16))["answer"]
        assert verdict["result"]["label"] == "fail"  # 1790..1799 is in no context: certainly unsupported


@pytest.mark.parametrize("ending", ["", "ragtriage.uninstrument()\n"], ids=["just-ends", "uninstrument"])
def test_an_app_that_batches_its_spans_and_ends_keeps_its_last_verdicts(
    phoenix: PhoenixServer, project: str, ending: str
) -> None:
    """``register(batch=True)``, as register() itself advises for production: the batch processor sends the last
    roots only at the OTel SDK's exit, after ragtriage's, and the write-back waited for them in vain."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "RAGTRIAGE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["OTEL_BSP_SCHEDULE_DELAY"] = "60000"  # the batch would wait a minute: only a flush sends it in time
    app = APP_THAT_JUST_ENDS.replace("verbose=False)", "verbose=False, batch=True)") + ending
    assert "batch=True" in app
    done = subprocess.run(
        [sys.executable, "-c", app, phoenix.url, project], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "at exit" not in done.stderr and "at shutdown" not in done.stderr, done.stderr[-3000:]  # nothing left
    roots = done.stdout.split()
    assert len(roots) == 10
    for root in roots:
        assert annotations(phoenix, project, int(root, 16))["answer"]["result"]["label"] == "fail"


EXIT_TOO_SOON = textwrap.dedent(
    """
    import asyncio, sys
    from opentelemetry.sdk.trace import TracerProvider
    import ragtriage
    from tests.test_phoenix import rag_request

    class SlowWriter:
        async def write(self, sample, result):
            await asyncio.to_thread(lambda: None)  # what the Phoenix writer does, through the default executor
            await asyncio.sleep(30)

        async def aclose(self):
            await asyncio.to_thread(lambda: None)

    provider = TracerProvider()
    ragtriage.instrument(tracer_provider=provider, sample_rate=1.0, auto_instrument=False, writer=SlowWriter(),
                         exit_flush_timeout_s=0.5, max_concurrency=2)
    for _ in range(5):
        rag_request(provider)
    """
)


def test_what_the_exit_flush_cannot_finish_is_one_line_not_a_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "RAGTRIAGE_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_TOO_SOON], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 60  # the writer would sleep 30 s per sample; the exit waits 0.5 s
    lines = [line for line in done.stderr.splitlines() if "ragtriage" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    # the two in flight were judged already, and stuck writing back: the line must not send anyone to the judge
    assert re.search(r"at exit, 5 sample\(s\) were not finished \(3 queued, 2 being judged or written back\)", lines[0])
    assert "RAGTRIAGE_EXIT_FLUSH_TIMEOUT_S" in lines[0]
    assert "Traceback" not in done.stderr


# -- 5. the verdict first, in the real UI ------------------------------------------------------------------------


def test_the_verdict_is_the_first_annotation_on_every_row(phoenix: PhoenixServer, project: str, tmp_path: Path) -> None:
    provider = app_provider(phoenix, project)
    ragtriage.instrument(tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False)
    answers = ["Paris has been the capital since 1794.", "?", "Paris is the capital of France."]
    traces, roots, _ = zip(*(rag_request(provider, answer=answer) for answer in answers), strict=True)
    assert provider.force_flush(30_000)
    found = [annotations(phoenix, project, root) for root in roots]
    grounding_fail, empty, uncertain = found
    # no judge: the free tiers only ever fail, so a fail is labelled, not scored, and the scores its certain evidence
    # implies ride on it (as annotations of their own, every chart of them would show the failures alone)
    assert set(grounding_fail) == set(empty) == set(uncertain) == {"answer", "eval_tier"}
    verdict = grounding_fail["answer"]
    assert verdict["result"]["label"] == "fail" and verdict["result"]["score"] is None
    assert verdict["metadata"]["implied_scores"] == {"faithfulness": 0.0}
    assert "1794" in verdict["result"]["explanation"] and verdict["result"]["explanation"].endswith(
        "implies faithfulness 0"
    )
    assert empty["answer"]["metadata"]["implied_scores"] == {"answer_quality": 0.0}
    assert uncertain["answer"]["result"]["label"] == "uncertain" and uncertain["answer"]["result"]["score"] is None
    assert "implied_scores" not in uncertain["answer"]["metadata"]
    on_trace = httpx.get(
        f"{phoenix.url}/v1/projects/{project}/trace_annotations", params={"trace_ids": f"{traces[0]:032x}"}
    ).json()["data"]
    assert {row["name"]: row["result"] for row in on_trace} == {n: row["result"] for n, row in grounding_fail.items()}
    url = phoenix_project_url(phoenix.url, project)
    assert url is not None
    with chromium(tmp_path) as page:
        rows, _ = rendered_traces(page, f"{url}/traces", {"since 1794", "capital of France."}, tmp_path / "rows.png")
        # the annotation columns are right of the input and output: scroll the table there, and look
        page.send(
            "Runtime.evaluate",
            expression="[...document.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 50)"
            ".forEach(e => { e.scrollLeft = e.scrollWidth; })",
        )
        time.sleep(0.5)
        (tmp_path / "rows.png").write_bytes(base64.b64decode(page.send("Page.captureScreenshot", format="png")["data"]))
    names = re.compile(r"\b(answer_quality|answer|eval_tier|faithfulness|relevance|context_recall|context_precision)\b")
    evaluated = [row for row in rows if names.search(row)]
    assert len(evaluated) == len(answers), rows
    assert all(names.search(row).group(1) == "answer" for row in evaluated), rows  # type: ignore[union-attr]
    png = (tmp_path / "rows.png").read_bytes()
    assert_not_blank(png)
    if target := os.environ.get("RAGTRIAGE_TEST_SCREENSHOT"):  # to look at it
        Path(target).write_bytes(png)
    provider.shutdown()


CHARTS = """query($id:ID!,$r:TimeRange!,$b:TimeBinConfig!){node(id:$id){... on Project{
  traceAnnotationScoreTimeSeries(timeRange:$r,timeBinConfig:$b){names data{scoresWithLabels{label score}}}
  spanAnnotationScoreTimeSeries(timeRange:$r,timeBinConfig:$b){names data{scoresWithLabels{label score}}}
  spanAnnotationMetricsTimeSeries(timeRange:$r,timeBinConfig:$b){
    names data{annotationSummaries{name labelFractions{label fraction}}}}
  traceAnnotationMetricsTimeSeries(timeRange:$r,timeBinConfig:$b){
    names data{annotationSummaries{name labelFractions{label fraction}}}}
}}}"""


def charts(phoenix: PhoenixServer, project: str) -> dict[str, dict[str, Any]]:
    """What the project's Metrics tab plots, per annotation name: the mean score ("Trace/Span annotation scores")
    and the label shares ("<name>: Evaluation results over time"), in one time bin (a year's: the test's traces are
    seconds apart, and an hour's bin could split them)."""
    now = time.time()
    window = {"start": _iso(now - 3600), "end": _iso(now + 3600)}
    node = graphql(phoenix, CHARTS, id=project_id(phoenix, project), r=window, b={"scale": "YEAR"})["node"]
    found: dict[str, dict[str, Any]] = {}
    for chart in ("trace", "span"):
        series = node[f"{chart}AnnotationScoreTimeSeries"]
        points = [p for bin in series["data"] for p in bin["scoresWithLabels"]]
        assert len(points) == len(series["names"]), series  # every name in one bin
        found[f"{chart} scores"] = {p["label"]: p["score"] for p in points}
        summaries = [
            s for bin in node[f"{chart}AnnotationMetricsTimeSeries"]["data"] for s in bin["annotationSummaries"]
        ]
        found[f"{chart} labels"] = {
            s["name"]: {f["label"]: round(f["fraction"], 3) for f in s["labelFractions"]} for s in summaries
        }
    return found


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test_no_chart_averages_only_the_failures(phoenix: PhoenixServer, judge_server: JudgeServer, tmp_path: Path) -> None:
    """The free tiers only ever fail: without a judge no score is charted; with one, the score charts are the
    judges'. Read from the GraphQL fields the Metrics tab plots, and from the tab as headless Chromium renders it."""

    def judge(body: dict[str, Any]) -> Reply:
        wrong = "Lyon" in json.dumps(body)
        return Reply(verdict_json(faithfulness=0.1 if wrong else 0.95, relevance=0.9, answer_quality=0.9,
                                  context_recall=0.9, context_precision=0.9, confidence=0.95))  # fmt: skip

    judge_server.default = judge
    answers = [
        "Paris has been the capital since 1794.",  # a year no context states: the free tiers fail it
        "Paris has been the capital since 1795.",
        "Paris is the capital of France.",  # the judge passes it
        "The capital of France is Lyon.",  # a name in no context: a signal the judge settles, as a fail
    ]
    seen, projects = {}, {}
    for with_judge in (False, True):
        project = f"charts-{'judge' if with_judge else 'free'}-{uuid.uuid4().hex[:6]}"
        provider = app_provider(phoenix, project)
        results: list[Any] = []
        ragtriage.instrument(
            tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False,
            local_judge_url=judge_server.url if with_judge else None,
            on_result=lambda s, r, out=results: out.append((s, r)),
        )  # fmt: skip
        roots = [rag_request(provider, answer=answer)[1] for answer in answers]
        assert provider.force_flush(60_000)
        ragtriage.uninstrument()
        for root in roots:
            annotations(phoenix, project, root)  # each span is in, with its annotations
        by_answer = {sample.answer: result for sample, result in results}  # they finish in any order
        decided = [(by_answer[a].verdict, by_answer[a].tier) for a in answers]
        seen[with_judge] = charts(phoenix, project), [v for v, _ in decided], [t for _, t in decided]
        projects[with_judge] = project
        provider.shutdown()

    (free, free_verdicts, free_tiers), (judged, verdicts, tiers) = seen[False], seen[True]
    assert free_verdicts == ["fail", "fail", "uncertain", "uncertain"] and set(free_tiers) == {"deterministic"}
    assert verdicts == ["fail", "fail", "pass", "fail"]
    assert tiers == ["deterministic", "deterministic", "local", "local"]
    for chart in ("trace", "span"):
        # no judge: two fails, nothing else decided. Nothing is scored, and the only label charts are the verdict's
        # and the tier's, over every evaluated answer (a faithfulness chart would be 100% fail: the fails alone)
        assert free[f"{chart} scores"] == {}
        assert free[f"{chart} labels"] == {
            "answer": {"fail": 0.5, "uncertain": 0.5},
            "eval_tier": {"deterministic": 1.0},
        }
        # with a judge: its pass rate and scores; the free tiers' fails are in the verdict's label shares
        assert judged[f"{chart} scores"]["answer"] == pytest.approx(0.5)
        assert judged[f"{chart} scores"]["faithfulness"] == pytest.approx((0.95 + 0.1) / 2)
        assert "eval_tier" not in judged[f"{chart} scores"]  # a label, never a score
        assert judged[f"{chart} labels"]["answer"] == {"fail": 0.75, "pass": 0.25}
        assert judged[f"{chart} labels"]["faithfulness"] == {"fail": 0.5, "pass": 0.5}

    with chromium(tmp_path) as page:
        page.send("Emulation.setDeviceMetricsOverride", width=1400, height=4200, deviceScaleFactor=1, mobile=False)
        free_tab = rendered_metrics(page, phoenix, projects[False], tmp_path / "free.png")
        judged_tab = rendered_metrics(page, phoenix, projects[True], tmp_path / "judged.png")
    for chart in ("Span", "Trace"):
        assert free_tab[f"{chart} annotation scores"][-1] == "No data in this time range", free_tab
        legend = judged_tab[f"{chart} annotation scores"]
        assert {"answer", "faithfulness", "relevance"} <= set(legend) and "eval_tier" not in legend, legend
    # the label charts: the verdict's and the tier's without a judge; with one, a chart per annotation
    assert {name for name in free_tab if name.endswith(" results")} == {"answer results", "eval_tier results"}
    assert "faithfulness results" in judged_tab
    assert_not_blank((tmp_path / "free.png").read_bytes())


def rendered_metrics(page: Page, phoenix: PhoenixServer, project: str, png: Path) -> dict[str, list[str]]:
    """The project's Metrics tab as rendered: each chart's title, mapped to its lines of text up to the next title
    (for "<name>: Evaluation results over time" the key is "<name> results"), read once both score charts have
    drawn (a legend, or "No data in this time range") and the label charts are there; a screenshot goes to ``png``."""
    page.send("Page.navigate", url=f"{phoenix.url}/projects/{project_id(phoenix, project)}/metrics")
    charts: dict[str, list[str]] = {}
    deadline = time.monotonic() + 90  # the first load compiles Phoenix's bundle: slow on a busy machine
    while time.monotonic() < deadline:
        charts = _charts_on(page)
        drawn = [charts.get(f"{c} annotation scores", []) for c in ("Span", "Trace")]
        settled = all("No data in this time range" in lines or "answer" in lines for lines in drawn)
        if settled and any(name.endswith(" results") for name in charts):
            break
        time.sleep(0.5)
    time.sleep(1.0)  # charts still drawing would show now
    png.write_bytes(base64.b64decode(page.send("Page.captureScreenshot", format="png")["data"]))
    return _charts_on(page)


def _charts_on(page: Page) -> dict[str, list[str]]:
    text = page.send("Runtime.evaluate", expression="document.body?.innerText ?? ''")["result"]["value"]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    charts: dict[str, list[str]] = {}
    current: list[str] = []
    for i, line in enumerate(lines):
        if line.endswith(" annotation scores") and not line.startswith("Average"):
            charts[line] = current = []
        elif i + 1 < len(lines) and lines[i + 1] == "Evaluation results over time":
            current = charts.setdefault(f"{line} results", [])
        elif line not in ("Evaluation results over time",) and not line.startswith("Average"):
            current.append(line)
    return charts
