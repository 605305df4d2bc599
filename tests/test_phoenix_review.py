"""Reviewing in Phoenix (#17): typed annotation configs, trace annotations, and links that open the failing traces.

Against the session's real `phoenix serve`; the links are opened in a real headless Chromium and the rendered
traces table is read, not only the URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from websockets.sync.client import connect

import ragtriage
from ragtriage import RAGEvaluator
from ragtriage.alerts.rules import default_rules, share_rule
from ragtriage.dashboards.report import write_report
from ragtriage.dashboards.sources import phoenix_project_url, records_from_phoenix
from ragtriage.evaluator.results import TIERS
from ragtriage.export import PhoenixWriter
from ragtriage.export.links import rule_filter
from ragtriage.export.sessions import SESSION_ANNOTATIONS
from ragtriage.instrumentation.instrument import installed_runtime
from ragtriage.metrics_registry import SCORES
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer
from tests.receivers import ListSink, LoopbackServer
from tests.test_dashboards_report import CHROMIUM_FLAGS, Page, assert_not_blank
from tests.test_phoenix import QUESTION, annotations, app_provider, rag_request

pytestmark = pytest.mark.phoenix

CONFIGS = {*SCORES, "answer", "eval_tier", "audit_verdict", "human_verdict", *SESSION_ANNOTATIONS}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project() -> str:
    return f"review-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _uninstrument() -> Iterator[None]:
    yield
    ragtriage.uninstrument()


def project_configs(phoenix: PhoenixServer, project: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{phoenix.url}/v1/projects/{project}/annotation_configs", params={"limit": 1000})
    response.raise_for_status()
    return response.json()["data"]


def trace_annotations(phoenix: PhoenixServer, project: str, trace_id: int) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{phoenix.url}/v1/projects/{project}/trace_annotations", params={"trace_ids": f"{trace_id:032x}", "limit": 100}
    )
    response.raise_for_status()
    return response.json()["data"]


SECOND_PROCESS = """
import sys
import ragtriage
from ragtriage.instrumentation.instrument import installed_runtime
from tests.test_phoenix import app_provider, rag_request

class Phoenix:
    url = sys.argv[1]

provider = app_provider(Phoenix, sys.argv[2])
ragtriage.instrument(tracer_provider=provider, endpoint=Phoenix.url, sample_rate=1.0, auto_instrument=False)
rag_request(provider, answer="Paris has been the capital since 1794.")
assert provider.force_flush(30_000)
print(installed_runtime().pipeline.writer.configs.state)
ragtriage.uninstrument()
provider.shutdown()
"""


def test_configs_are_registered_on_first_write_and_once_across_processes(phoenix: PhoenixServer, project: str) -> None:
    provider = app_provider(phoenix, project)
    ragtriage.instrument(tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False)
    rag_request(provider, answer="Paris has been the capital since 1794.")
    assert provider.force_flush(30_000)
    provider.shutdown()

    configs = {c["name"]: c for c in project_configs(phoenix, project)}
    assert set(configs) == CONFIGS
    for name in SCORES:
        assert configs[name]["type"] == "CONTINUOUS"
        assert (configs[name]["lower_bound"], configs[name]["upper_bound"]) == (0.0, 1.0)
        assert configs[name]["optimization_direction"] == "MAXIMIZE"
    verdict = configs["answer"]
    assert verdict["type"] == "CATEGORICAL"
    assert [(v["label"], v["score"]) for v in verdict["values"]] == [("pass", 1.0), ("fail", 0.0), ("uncertain", None)]
    tier_labels = [v["label"] for v in configs["eval_tier"]["values"]]
    assert tier_labels == [*TIERS, "judge_error", "budget_exhausted"]
    human = configs["human_verdict"]  # a reviewer's two clicks: pass or fail
    assert human["type"] == "CATEGORICAL"
    assert [(v["label"], v["score"]) for v in human["values"]] == [("pass", 1.0), ("fail", 0.0)]
    assert [v["label"] for v in configs["audit_verdict"]["values"]] == ["pass", "fail", "uncertain"]

    # A second process (another replica, a worker) starts with nothing registered: it finds the configs taken
    # (409), attaches them again (a no-op), and duplicates nothing.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "RAGTRIAGE_"))}
    second = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, phoenix.url, project],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.split() == ["done"]
    assert "annotation config" not in second.stderr
    assert sorted(c["name"] for c in project_configs(phoenix, project)) == sorted(CONFIGS)
    everywhere = httpx.get(f"{phoenix.url}/v1/annotation_configs", params={"limit": 1000}).json()["data"]
    assert sorted(c["name"] for c in everywhere if c["name"] in CONFIGS) == sorted(CONFIGS)


def test_trace_annotations_mirror_the_span_annotations(
    phoenix: PhoenixServer, judge_server: JudgeServer, project: str
) -> None:
    judge_server.default = Reply(
        verdict_json(
            faithfulness=0.83, relevance=0.91, answer_quality=0.5, context_recall=0.77, context_precision=0.5,
            confidence=0.95,
        )
    )  # fmt: skip
    written = []
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, local_judge_url=judge_server.url,
        auto_instrument=False, on_result=lambda sample, result: written.append((sample, result)),
    )  # fmt: skip
    trace_id, root_id, _ = rag_request(provider)
    assert provider.force_flush(30_000)

    on_span = annotations(phoenix, project, root_id)
    on_trace = {row["name"]: row for row in trace_annotations(phoenix, project, trace_id)}
    assert set(on_trace) == set(on_span) == {*SCORES, "eval_tier", "answer"}  # a judge's scores: on both
    for name, row in on_trace.items():
        assert row["trace_id"] == f"{trace_id:032x}"
        assert row["result"] == on_span[name]["result"]
        assert row["identifier"] == on_span[name]["identifier"] == f"ragtriage:{trace_id:032x}-{root_id:016x}"
        assert row["annotator_kind"] == on_span[name]["annotator_kind"]
    assert on_trace["faithfulness"]["result"]["score"] == 0.83
    assert on_trace["answer"]["result"]["label"] == "fail"
    assert on_trace["answer"]["result"]["score"] == 0.0  # the chart of trace scores plots the pass rate

    # Redelivered (a worker died before acknowledging): the same identifier replaces, never adds.
    writer = PhoenixWriter(endpoint=phoenix.url, project_name=project)

    async def again() -> None:
        await writer.write(*written[0])
        await writer.aclose()

    asyncio.run(again())
    names = [row["name"] for row in trace_annotations(phoenix, project, trace_id)]
    assert sorted(names) == sorted(on_trace)
    provider.shutdown()


class GuardedPhoenix(LoopbackServer):
    """The real Phoenix behind a front that refuses its annotation config API with ``status`` (404: a Phoenix from
    before the API; 403: what Phoenix tells a viewer's key); every other request is passed through, so the
    annotations still land in the real server."""

    def __init__(self, upstream: str, status: int) -> None:
        refusal = {404: b'{"detail":"Not Found"}', 403: b"Viewers cannot perform this action."}[status]

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if "/annotation_configs" in self.path:
                    code, content, kind = status, refusal, "application/json"
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                    answer = httpx.request(self.command, upstream + self.path, content=body, headers=headers)
                    code, content = answer.status_code, answer.content
                    kind = answer.headers.get("content-type", "application/json")
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = _forward

        super().__init__(Handler)


@pytest.mark.parametrize(("status", "fix"), [(404, "upgrade Phoenix"), (403, "set PHOENIX_API_KEY")])
def test_no_config_api_or_no_permission_is_logged_once_and_still_annotated(
    phoenix: PhoenixServer, project: str, caplog: pytest.LogCaptureFixture, status: int, fix: str
) -> None:
    caplog.set_level(logging.WARNING, logger="ragtriage")
    provider = app_provider(phoenix, project)
    with GuardedPhoenix(phoenix.url, status) as guarded:
        writer = PhoenixWriter(endpoint=guarded.url, project_name=project)
        ragtriage.instrument(
            tracer_provider=provider, evaluator=RAGEvaluator(sample_rate=1.0), writer=writer, auto_instrument=False
        )
        roots = [rag_request(provider, answer=f"Paris has been the capital since {year}.")[1] for year in (1794, 1802)]
        assert provider.force_flush(30_000)
    for root_id in roots:
        assert annotations(phoenix, project, root_id)["answer"]["result"]["label"] == "fail"
    assert writer.configs.state == "unsupported"
    warnings = [r.getMessage() for r in caplog.records if "annotation config" in r.getMessage()]
    assert len(warnings) == 1 and fix in warnings[0], warnings
    assert project_configs(phoenix, project) == []
    provider.shutdown()


# -- links, opened in a real browser --------------------------------------------------------------------------


def timed_request(provider: TracerProvider, start_ns: int, duration_ms: int, answer: str) -> tuple[int, int]:
    """A RAG trace with fixed times (start, a retriever 1-2 ms in, the root's duration): the same times give the
    same latencies wherever it is written."""
    tracer = provider.get_tracer("app")
    root = tracer.start_span("rag", attributes={"openinference.span.kind": "CHAIN", "input.value": QUESTION},
                             start_time=start_ns)  # fmt: skip
    with trace.use_span(root, end_on_exit=False):
        retriever = tracer.start_span(
            "retrieve",
            attributes={
                "openinference.span.kind": "RETRIEVER",
                "retrieval.documents.0.document.content": "Paris is the capital and largest city of France.",
            },
            start_time=start_ns + 1_000_000,
        )
        retriever.end(end_time=start_ns + 2_000_000)
    root.set_attribute("output.value", answer)
    root.end(end_time=start_ns + duration_ms * 1_000_000)
    ctx = root.get_span_context()
    return ctx.trace_id, ctx.span_id


def past_request(provider: TracerProvider, answer: str, seconds_ago: float) -> None:
    """A RAG trace that started ``seconds_ago``: before the window an alert is about."""
    timed_request(provider, time.time_ns() - int(seconds_ago * 1e9), 3, answer)


@contextlib.contextmanager
def chromium(workdir: Path) -> Iterator[Page]:
    """A fresh headless Chromium profile with one tab, over the DevTools protocol."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    profile = workdir / "profile"
    with (workdir / "chromium.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,900", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "chromium never opened its DevTools port"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        target = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            page = Page(ws)
            page.send("Page.enable")
            yield page
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def rendered_traces(page: Page, url: str, expected: set[str], png: Path) -> tuple[list[str], str]:
    """Open ``url`` and read the traces table once every ``expected`` answer is on it (or 90 s passed);
    returns the rows' text and the filter box's, and saves a screenshot to ``png``."""
    page.send("Page.navigate", url=url)
    rows: list[str] = []
    deadline = time.monotonic() + 90  # the first load compiles Phoenix's 5 MB bundle: slow on a busy machine
    while time.monotonic() < deadline:
        value = page.send(
            "Runtime.evaluate",
            expression="JSON.stringify([...document.querySelectorAll('tbody tr')].map(r => r.innerText))",
        )["result"]["value"]
        rows = json.loads(value)
        if all(any(answer in row for row in rows) for answer in expected):
            break
        time.sleep(0.25)
    time.sleep(0.5)  # a table that is still filling would show it now
    value = page.send(
        "Runtime.evaluate",
        expression="JSON.stringify([[...document.querySelectorAll('tbody tr')].map(r => r.innerText),"
        "[...document.querySelectorAll('.cm-content')].map(e => e.innerText).join(' ')])",
    )["result"]["value"]
    rows, condition = json.loads(value)
    png.write_bytes(base64.b64decode(page.send("Page.captureScreenshot", format="png")["data"]))
    return rows, condition


def test_every_alert_filter_is_phoenix_trace_filter_dsl(phoenix: PhoenixServer) -> None:
    """What the default rules link to compiles in Phoenix's own validator (the one its filter box uses)."""
    filters = {rule.name: rule_filter(rule) for rule in default_rules()}
    assert filters["faithfulness_low"] == "trace_annotations['faithfulness'].score < 0.7"
    assert filters["tier_distribution_drift"] is None  # no subset: the window's traces
    project_id = httpx.get(f"{phoenix.url}/v1/projects/default").json()["data"]["id"]
    query = (
        "query($id:ID!,$c:String!){node(id:$id){... on Project"
        "{validateTraceFilterCondition(condition:$c){isValid errorMessage}}}}"
    )
    for name, condition in filters.items():
        if condition is None:
            continue
        answer = httpx.post(
            f"{phoenix.url}/graphql", json={"query": query, "variables": {"id": project_id, "c": condition}}
        )
        assert answer.json()["data"]["node"]["validateTraceFilterCondition"] == {
            "isValid": True,
            "errorMessage": None,
        }, name


def test_alert_and_report_links_open_the_failing_traces(phoenix: PhoenixServer, project: str, tmp_path: Path) -> None:
    old, fails, fine = "since 1066", ["since 1794", "since 1802", "since 1871"], "Paris is the capital of France."
    sink = ListSink()
    provider = app_provider(phoenix, project)
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False, alert_sinks=[sink],
        alert_rules=[share_rule("fail_share", window_size=10, min_samples=5, cooldown_s=3600)],
    )  # fmt: skip
    past_request(provider, f"Paris has been the capital {old}.", seconds_ago=3 * 3600)
    rag_request(provider, answer=f"Paris has been the capital {fails[0]}.")
    rag_request(provider, answer=f"Paris has been the capital {fails[1]}.")
    rag_request(provider, answer=fine)  # the free tiers cannot settle it: uncertain, not a fail
    assert provider.force_flush(30_000)
    time.sleep(1.1)  # the app's alert rules run at most once a second: the next result starts a turn
    rag_request(provider, answer=f"Paris has been the capital {fails[2]}.")
    assert provider.force_flush(30_000)
    deadline = time.monotonic() + 10
    while not sink.events and time.monotonic() < deadline:
        time.sleep(0.05)
    runtime = installed_runtime()
    assert runtime is not None
    assert [e.rule for e in sink.events] == ["fail_share_high"]
    alert_url = sink.events[0].phoenix_url
    assert alert_url and alert_url.startswith(f"{phoenix.url}/projects/") and "traceFilterCondition" in alert_url
    ragtriage.uninstrument()
    provider.shutdown()

    records: list[Any] = []
    deadline = time.monotonic() + 30
    while len(records) < 5 and time.monotonic() < deadline:  # Phoenix ingests asynchronously
        records = records_from_phoenix(phoenix.url, project)
        time.sleep(0.1)
    report = write_report(
        records, tmp_path / "report.html", phoenix_project_url=phoenix_project_url(phoenix.url, project)
    )
    found = re.search(r'<a href="([^"]+)"[^>]*>Open the 4 failing traces in Phoenix</a>', report.read_text())
    assert found, "the report has no link to its failing traces"
    report_url = html.unescape(found.group(1))

    with chromium(tmp_path) as page:
        # The alert: this window's failing traces; not the passing one, nor the failure from hours before.
        rows, condition = rendered_traces(page, alert_url, set(fails), tmp_path / "alert.png")
        assert condition == "trace_annotations['answer'].label == 'fail'"
        assert sorted(next(f for f in fails if f in row) for row in rows) == fails, rows
        assert not any(fine in row or old in row for row in rows)
        # The report: every failing trace it covers, the old one too; still not the passing one.
        rows, condition = rendered_traces(page, report_url, {old, *fails}, tmp_path / "report.png")
        assert "answer" in condition
        assert sorted(next(a for a in (old, *fails) if a in row) for row in rows) == sorted([old, *fails]), rows
        assert not any(fine in row for row in rows)
    assert_not_blank((tmp_path / "alert.png").read_bytes())
