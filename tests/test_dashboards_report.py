"""``ragtriage report``: real results in, one offline HTML file out, opened in a real headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from PIL import Image, ImageStat
from typer.testing import CliRunner
from websockets.sync.client import connect

import ragtriage
from ragtriage import LLMJudge, RAGEvaluator
from ragtriage.cli import app
from ragtriage.dashboards.sources import records_from_phoenix
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer

CONTEXTS = ["Paris is the capital and largest city of France.", "Lyon is a city in France."]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
]


class Page:
    """A Chromium tab over the DevTools protocol: console errors, exceptions and requests are recorded."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == method for e in self.events):
            self.events.append(json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1))))

    def errors(self) -> list[Any]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(params["args"])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"])
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]


@contextlib.contextmanager
def open_in_chromium(path: Path, workdir: Path) -> Iterator[tuple[Page, bytes]]:
    """Load ``path`` in a fresh headless Chromium profile; yields the page and a PNG screenshot."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    profile = workdir / "profile"
    with (workdir / "chromium.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,2200", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes its debugging port here
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, (workdir / "chromium.log").read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "chromium never opened its DevTools port"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        target = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            page = Page(ws)
            for domain in ("Runtime", "Log", "Page", "Network"):
                page.send(f"{domain}.enable")
            page.send("Page.navigate", url=path.resolve().as_uri())
            page.wait_for("Page.loadEventFired")
            plots = page.send(
                "Runtime.evaluate", expression="document.querySelectorAll('.js-plotly-plot .main-svg').length"
            )["result"]["value"]
            assert plots >= 4, "plotly drew fewer than the four charts"
            png = base64.b64decode(page.send("Page.captureScreenshot", format="png")["data"])
            yield page, png
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def assert_not_blank(png: bytes) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= 800 and image.height >= 600
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "screenshot has almost no colours: blank page"
    assert max(ImageStat.Stat(image.convert("L")).stddev) > 10, "screenshot is a flat colour"


async def real_results(judge_url: str) -> list[dict[str, Any]]:
    evaluator = RAGEvaluator(
        sample_rate=1.0, local_judge=LLMJudge(model="llama", base_url=judge_url, input_usd_per_1m=2.0, max_retries=0)
    )
    rows = []
    answers = ["Paris is the capital of France.", "Paris has been the capital since 1794.", "Lyon is in France."]
    for i in range(12):
        result = await evaluator.evaluate(f"Question {i}: what is the capital of France?", answers[i % 3], CONTEXTS)
        rows.append({**result.to_dict(), "timestamp": 1_700_000_000 + 60 * i})
    await evaluator.aclose()
    return rows


async def test_report_from_jsonl_opens_in_chromium(judge_server: JudgeServer, tmp_path: Path) -> None:
    judge_server.default = Reply(
        verdict_json(faithfulness=0.4, relevance=0.8, confidence=0.95, reasons="<script>alert(1)</script>")
    )
    rows = await real_results(judge_server.url)
    jsonl = tmp_path / "results.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "report.html"

    result = CliRunner().invoke(app, ["report", "--jsonl", str(jsonl), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 evaluations" in result.output
    text = out.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in text  # data is escaped, never markup
    assert not re.search(r'<script[^>]+src=|<link[^>]+href="http', text)  # self-contained: nothing to fetch

    with open_in_chromium(out, tmp_path) as (page, png):
        assert page.errors() == []
        assert [u for u in page.requests() if not u.startswith(("file:", "data:"))] == []
    (tmp_path / "report.png").write_bytes(png)
    assert_not_blank(png)


def test_report_needs_a_source() -> None:
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code != 0


@pytest.mark.phoenix
def test_report_from_phoenix_annotations_links_the_traces(
    phoenix: PhoenixServer, judge_server: JudgeServer, tmp_path: Path
) -> None:
    project = f"report-{uuid.uuid4().hex[:8]}"
    judge_server.default = Reply(verdict_json(faithfulness=0.3, confidence=0.95))
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces")))
    ragtriage.instrument(
        tracer_provider=provider,
        endpoint=phoenix.url,
        sample_rate=1.0,
        local_judge_url=judge_server.url,
        auto_instrument=False,
    )
    try:
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("rag", attributes={"input.value": "What is the capital?"}) as root:
            attrs = {f"retrieval.documents.{i}.document.content": c for i, c in enumerate(CONTEXTS)}
            with tracer.start_as_current_span("retrieve", attributes={"openinference.span.kind": "RETRIEVER", **attrs}):
                pass
            root.set_attribute("output.value", "Paris is the capital of France.")
        trace_id = f"{root.get_span_context().trace_id:032x}"
        assert provider.force_flush(30_000)
    finally:
        ragtriage.uninstrument()
        provider.shutdown()

    records = phoenix_records(phoenix, project, lambda r: "faithfulness" in r.scores)
    assert [(r.trace_id, r.tier, r.verdict, r.scores.get("faithfulness")) for r in records] == [
        (trace_id, "local", "fail", 0.3)
    ]

    out = tmp_path / "phoenix.html"
    result = CliRunner().invoke(app, ["report", "--project", project, "--phoenix-url", phoenix.url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    links = re.findall(r'href="([^"]+)"', out.read_text(encoding="utf-8"))
    trace_links = [link for link in links if link.endswith(f"/traces/{trace_id}")]
    assert trace_links and trace_links[0].startswith(f"{phoenix.url}/projects/")
    assert httpx.get(trace_links[0]).status_code == 200  # Phoenix serves its UI at that address


def phoenix_records(phoenix: PhoenixServer, project: str, ready: Callable[[Any], bool]) -> list[Any]:
    """The project's records, once the first is ``ready`` (Phoenix ingests asynchronously) or 30 s passed."""
    records: list[Any] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = records_from_phoenix(phoenix.url, project)
        if records and ready(records[0]):
            break
        time.sleep(0.2)
    return records


def test_the_report_names_the_question_judged_under_an_http_root(phoenix: PhoenixServer, tmp_path: Path) -> None:
    """A FastAPI-style server span is the root and holds no ``input.value``: the worst-traces table still says
    which question each verdict is about (the one ragtriage judged, from its EVALUATOR span)."""
    project = f"report-http-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces")))
    ragtriage.instrument(tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, auto_instrument=False)
    question = "When did the Harbor Bridge open?"
    try:
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("GET /ask", kind=SpanKind.SERVER, attributes={"http.route": "/ask"}):
            chain = {"openinference.span.kind": "CHAIN", "input.value": question}
            with tracer.start_as_current_span("rag", attributes=chain) as rag:
                attrs = {"retrieval.documents.0.document.content": "The Harbor Bridge opened in 1932."}
                with tracer.start_as_current_span(
                    "retrieve", attributes={"openinference.span.kind": "RETRIEVER", **attrs}
                ):
                    pass
                rag.set_attribute("output.value", "It opened in 1945.")  # a year no context has: a certain fail
        assert provider.force_flush(30_000)
    finally:
        ragtriage.uninstrument()
        provider.shutdown()

    records = phoenix_records(phoenix, project, lambda r: bool(r.question))
    assert [(r.verdict, r.question) for r in records] == [("fail", question)]
