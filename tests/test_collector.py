"""`ragtriage collect`: real OTLP exporters in, real Phoenix out, whole traces from several services evaluated."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ragtriage import RAGEvaluator
from ragtriage.collector.assembly import TraceAssembler
from ragtriage.collector.collector import Collector
from ragtriage.collector.forwarder import Forwarder
from ragtriage.collector.otlp import MAX_DECODED_BYTES
from ragtriage.pipeline import Pipeline
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer
from ragtriage.testing.redis_server import free_port
from tests.receivers import Receiver
from tests.test_phoenix import annotations
from tests.test_streams import wait_until

HERE = Path(__file__).parent
QUESTION = "When was the Eiffel Tower completed?"
ANSWER = "It was completed on 31 March 1889."


class Samples:
    """A sample handler standing in for nothing: the real pipeline, with the results kept."""

    def __init__(self) -> None:
        self.results: list = []
        self.pipeline = Pipeline(RAGEvaluator(sample_rate=1.0), on_result=lambda s, r: self.results.append((s, r)))


@contextmanager
def serving(collector: Collector) -> Iterator[str]:
    """The collector behind a real uvicorn on loopback, in a thread with its own loop."""
    server = uvicorn.Server(uvicorn.Config(collector, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=10, what="uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def collector(forward: str | None, *, buffer_bytes: int = 1 << 20, retries: int = 3, quiet_s: float = 0.2):
    samples = Samples()
    forwarder = Forwarder(forward, max_buffer_bytes=buffer_bytes, max_retries=retries) if forward else None
    assembler = TraceAssembler(sample_rate=1.0, quiet_s=quiet_s, ttl_s=30)
    return Collector(samples.pipeline, forwarder, assembler, tick_s=0.05), samples


def exported_rag_trace(question: str = QUESTION, project: str | None = None) -> list[ReadableSpan]:
    """The spans of one RAG trace, as the SDK's exporter would send them (of Phoenix project ``project``)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project} if project else {}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span(
        "rag", attributes={"openinference.span.kind": "CHAIN", "input.value": question}
    ) as root:
        attrs = {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.content": "Built in 1889."}
        with tracer.start_as_current_span("retrieve", attributes=attrs):
            pass
        root.set_attribute("output.value", ANSWER)
    return list(memory.get_finished_spans())


def json_request(trace_id: str, spans: list[dict]) -> bytes:
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}).encode()


def json_span(trace_id: str, span_id: str, parent: str = "", **attributes: object) -> dict:
    def value(v: object) -> dict:
        return {"stringValue": v} if isinstance(v, str) else {"doubleValue": v}

    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": "s",
        "attributes": [{"key": k.replace("__", "."), "value": value(v)} for k, v in attributes.items()],
    }


def _trace_spans(phoenix: PhoenixServer, project: str, ids: dict[str, str]) -> list[dict[str, Any]]:
    spans = httpx.get(f"{phoenix.url}/v1/projects/{project}/spans", params={"limit": 100}).json()["data"]
    return [s for s in spans if s["context"]["trace_id"] == ids["trace_id"]]


# -- the main path: two services, real exporters, real Phoenix --------------------------------------------


@pytest.mark.phoenix
def test_a_trace_split_over_two_services_is_evaluated_whole_and_lands_on_its_global_root(
    phoenix: PhoenixServer, judge_server: JudgeServer, tmp_path: Path
) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.35, confidence=0.95))
    project = f"collect-{os.getpid()}-{int(time.time())}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGTRIAGE_", "OTEL_", "OPENAI"))}
    env |= {
        "PHOENIX_COLLECTOR_ENDPOINT": phoenix.url,
        "PHOENIX_PROJECT_NAME": project,
        "RAGTRIAGE_SAMPLE_RATE": "1",
        "RAGTRIAGE_COLLECTOR_QUIET_S": "1.5",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the apps' exporters send within 0.1 s: a short quiet period is enough
        "RAGTRIAGE_LOCAL_JUDGE_URL": judge_server.url,
    }
    log = (tmp_path / "collect.log").open("wb")
    command = [sys.executable, "-m", "ragtriage.cli", "collect", "--host", "127.0.0.1", "--port", str(port)]
    collect = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    port_file = tmp_path / "retriever.port"
    retriever = subprocess.Popen([sys.executable, str(HERE / "collector_apps.py"), "retriever", str(port_file), url],
                                 env=env)  # fmt: skip
    try:
        wait_until(lambda: _healthy(url) and port_file.exists(), timeout_s=30, what="the collector and the retriever")
        gateway = subprocess.run(
            [sys.executable, str(HERE / "collector_apps.py"), "gateway",
             f"http://127.0.0.1:{port_file.read_text()}", url, QUESTION, ANSWER],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        ids = json.loads(gateway.stdout.strip().splitlines()[-1])
        root = int(ids["root_span_id"], 16)
        retriever.send_signal(signal.SIGTERM)  # it flushed its spans before answering
        retriever.wait(30)
        wait_until(lambda: "faithfulness" in annotations(phoenix, project, root), timeout_s=60, what="the scores")
        rows = annotations(phoenix, project, root)
        assert rows["faithfulness"]["result"]["score"] == pytest.approx(0.35)
        assert rows["eval_tier"]["result"]["label"] == "local"
        # the whole trace reached Phoenix through the collector, both services' spans
        spans = httpx.get(f"{phoenix.url}/v1/projects/{project}/spans", params={"limit": 100}).json()["data"]
        names = {s["name"] for s in spans if s["context"]["trace_id"] == ids["trace_id"]}
        assert {"answer", "search", "llm"} <= names
        # the EVALUATOR span sits at the global root's end, with no duration: the trace's latency is the app's
        wait_until(lambda: any(s["span_kind"] == "EVALUATOR" for s in _trace_spans(phoenix, project, ids)),
                   timeout_s=30, what="the EVALUATOR span")  # fmt: skip
        spans = _trace_spans(phoenix, project, ids)
        evaluator = next(s for s in spans if s["span_kind"] == "EVALUATOR")
        root_span = next(s for s in spans if s["context"]["span_id"] == ids["root_span_id"])
        assert evaluator["parent_id"] == ids["root_span_id"]
        assert evaluator["start_time"] == evaluator["end_time"] == root_span["end_time"]
        # the judge saw the other service's documents: the contexts came from the retriever process
        prompt = json.dumps(judge_server.requests[-1])
        assert "World's Fair" in prompt and QUESTION in prompt
    finally:
        for process in (retriever, collect):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
    output = (tmp_path / "collect.log").read_text()
    stats = json.loads(output.rsplit("ragtriage collect stopped: ", 1)[1].splitlines()[0])
    assert stats["evaluations_ok"] == 1 and stats["requests_forwarded"] == stats["requests_received"]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- failure paths on an in-process collector ---------------------------------------------------------------


def test_phoenix_down_forwarding_retries_then_counts_and_the_exporter_never_waits() -> None:
    coll, samples = collector(f"http://127.0.0.1:{free_port()}/v1/traces", retries=2)
    with serving(coll) as url:
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=3)
        assert exporter.export(exported_rag_trace()) == SpanExportResult.SUCCESS  # answered before forwarding
        wait_until(lambda: coll.stats.get("forward_dropped") == 1, timeout_s=30, what="the forward to give up")
        wait_until(lambda: len(samples.results) == 1, timeout_s=10, what="the evaluation")
        stats = coll.stats
    assert stats["forward_retries"] == 2 and stats.get("requests_forwarded", 0) == 0
    assert stats["evaluations_ok"] == 1  # evaluation never waits on forwarding


def test_a_full_forward_buffer_answers_503_with_retry_after_and_memory_stays_bounded() -> None:
    with Receiver() as next_hop:
        next_hop.hang.set()
        body = json_request("a" * 32, [json_span("a" * 32, "b" * 16)])
        coll, _ = collector(next_hop.url, buffer_bytes=3 * len(body))
        with serving(coll) as url, httpx.Client(headers={"content-type": "application/json"}) as client:
            statuses = [client.post(f"{url}/v1/traces", content=body) for _ in range(8)]
            assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
            rejected = [r for r in statuses if r.status_code == 503]
            assert rejected and all(r.headers["retry-after"] == "1" for r in rejected)
            assert coll.stats["forward_buffer_bytes"] <= 3 * len(body)
            next_hop.release.set()
            next_hop.hang.clear()
            wait_until(lambda: coll.stats["forward_buffer_bytes"] == 0, timeout_s=20, what="the buffer to drain")
            assert client.post(f"{url}/v1/traces", content=body).status_code == 200  # the retry gets in
    assert coll.stats["requests_rejected_backpressure"] == len(rejected)


def test_otlp_json_gzip_and_bad_requests() -> None:
    trace_id, root, child = "1" * 32, "2" * 16, "3" * 16
    spans = [
        json_span(trace_id, child, root, openinference__span__kind="RETRIEVER",
                  **{"retrieval.documents.0.document.content": "Paris is the capital of France."}),
        json_span(trace_id, root, "", input__value="What is the capital of France?", output__value="Paris."),
    ]  # fmt: skip
    coll, samples = collector(None)
    with serving(coll) as url, httpx.Client() as client:
        ok = client.post(f"{url}/v1/traces", content=gzip.compress(json_request(trace_id, spans)),
                         headers={"content-type": "application/json", "content-encoding": "gzip"})  # fmt: skip
        assert (ok.status_code, ok.json()) == (200, {})
        wait_until(lambda: samples.results, timeout_s=10, what="the evaluation")
        sample, _ = samples.results[0]
        assert (sample.question, sample.answer, sample.contexts) == (
            "What is the capital of France?", "Paris.", ["Paris is the capital of France."]
        )  # fmt: skip
        assert f"{sample.root_span_id:016x}" == root
        post = lambda body, **headers: client.post(f"{url}/v1/traces", content=body, headers=headers)  # noqa: E731
        assert post(b"x", **{"content-type": "text/plain"}).status_code == 415
        assert post(b"\x00garbage", **{"content-type": "application/x-protobuf"}).status_code == 400
        assert post(b"{nope", **{"content-type": "application/json"}).status_code == 400
        bomb = gzip.compress(b"0" * (MAX_DECODED_BYTES + 1))
        assert post(bomb, **{"content-type": "application/json", "content-encoding": "gzip"}).status_code == 400
        assert client.get(f"{url}/v1/traces").status_code == 405
    assert coll.stats["requests_undecodable"] == 3


def test_a_late_span_never_makes_a_second_sample_and_sampling_agrees_with_instrument() -> None:
    assembler = TraceAssembler(sample_rate=1.0, quiet_s=1.0, ttl_s=60)
    from ragtriage.collector.otlp import ReceivedSpan

    retriever = {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.content": "c"}
    assembler.add(
        [ReceivedSpan(7, 1, 0, {"input.value": "q", "output.value": "a"}), ReceivedSpan(7, 2, 1, retriever)], 0.0
    )
    assert assembler.complete(0.5) == []  # still within the quiet period
    [(trace_id, spans)] = assembler.complete(1.5)
    assert trace_id == 7 and len(spans) == 2
    assembler.add([ReceivedSpan(7, 3, 1, retriever)], 2.0)  # arrives after the trace was evaluated
    assert assembler.complete(10.0) == [] and assembler.counts["spans_late"] == 1
    assembler.add([ReceivedSpan(8, 9, 4, retriever)], 0.0)  # its root never arrives
    assert assembler.complete(100.0) == [] and assembler.counts["traces_expired"] == 1
    for rate in (0.1, 0.5):
        rule = TraceAssembler(sample_rate=rate)
        evaluator = RAGEvaluator(sample_rate=rate)
        ids = [int.from_bytes(os.urandom(16), "big") for _ in range(2000)]
        assert [rule.sampled(i) for i in ids] == [evaluator.should_sample(i) for i in ids]


def test_a_collector_from_settings_builds_the_same_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragtriage.collector import build_collector
    from ragtriage.config import Config

    monkeypatch.setenv("RAGTRIAGE_SAMPLE_RATE", "0.25")
    coll, runtime = build_collector(Config.from_env(write_back=False), forward="")
    assert coll.forwarder is None and runtime.role == "collector" and runtime.pipeline is coll.handler
    assert runtime.alerts is not None and "dropped_samples_high" in [r.name for r in runtime.alerts.rules]
    assert runtime.drops() == (0, 0)
    asyncio.run(runtime.aclose())


TS_APP = HERE / "ts_app"


def built_ts_app() -> Path:
    """tests/ts_app, installed from the npm registry (pinned by its lockfile) and compiled; skip without Node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed (.ci/run installs them)")
    built = TS_APP / "dist" / "app.js"
    if not built.exists() or built.stat().st_mtime < (TS_APP / "app.ts").stat().st_mtime:
        for command in (["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run", "build"]):
            subprocess.run(command, cwd=TS_APP, check=True, capture_output=True, timeout=300)
    return built


def test_a_typescript_app_traced_with_openinference_js_is_evaluated_like_a_python_one() -> None:
    app = built_ts_app()
    coll, samples = collector(None)
    with serving(coll) as url:
        ran = subprocess.run(["node", str(app), url, QUESTION, ANSWER], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        ids = json.loads(ran.stdout.strip().splitlines()[-1])
        wait_until(lambda: samples.results, timeout_s=20, what="the TypeScript app's trace to be evaluated")
    [(sample, result)] = samples.results
    assert (f"{sample.trace_id:032x}", f"{sample.root_span_id:016x}") == (ids["trace_id"], ids["root_span_id"])
    assert (sample.question, sample.answer) == (QUESTION, ANSWER)
    assert [(d.id, d.score) for d in sample.documents] == [("ts-1", 0.92), ("ts-2", 0.81)]
    assert sample.contexts[0] == "The Eiffel Tower was completed on 31 March 1889."
    assert result.status == "ok" and result.tier == "deterministic"


def test_otlp_grpc_from_the_sdks_grpc_exporter_is_received_evaluated_and_forwarded(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGTRIAGE_", "OTEL_", "OPENAI", "PHOENIX"))}
    env |= {"RAGTRIAGE_SAMPLE_RATE": "1", "RAGTRIAGE_COLLECTOR_QUIET_S": "0.2", "RAGTRIAGE_WRITE_BACK": "false"}
    with Receiver() as next_hop:
        log = (tmp_path / "collect.log").open("wb")
        command = [sys.executable, "-m", "ragtriage.cli", "collect", "--host", "127.0.0.1", "--port", str(port),
                   "--grpc-port", str(grpc_port), "--forward", next_hop.url]  # fmt: skip
        collect = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: _healthy(f"http://127.0.0.1:{port}"), timeout_s=30, what="the collector")
            exporter = GrpcExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True, timeout=5)
            assert exporter.export(exported_rag_trace()) == SpanExportResult.SUCCESS
            exporter.shutdown()
            wait_until(lambda: next_hop.bodies, timeout_s=10, what="the forward")
            time.sleep(0.5)  # one quiet period: the trace completes and is evaluated
        finally:
            collect.send_signal(signal.SIGTERM)
            collect.wait(30)
    output = (tmp_path / "collect.log").read_text()
    stats = json.loads(output.rsplit("ragtriage collect stopped: ", 1)[1].splitlines()[0])
    assert ExportTraceServiceRequest.FromString(next_hop.bodies[0]).resource_spans  # the same message, forwarded
    assert "content-encoding" not in next_hop.headers[0]  # uncompressed: `identity` gets a 415 from phoenix serve
    assert stats["spans_received"] == 2 and stats["requests_forwarded"] == 1 and stats["evaluations_ok"] == 1
