"""Securing `ragtriage collect`: tokens, TLS, loopback by default, a cap per sender, never lending Phoenix's key.

Real OTLP exporters (HTTP and gRPC) -> a real `ragtriage collect` process -> a real `phoenix serve`; the judge
is the loopback JudgeServer, whose request count shows what was judged.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from ragtriage.collector import build_collector
from ragtriage.collector.auth import ANONYMOUS, TokenAuth, read_token_file
from ragtriage.collector.sender_cap import SenderCap
from ragtriage.config import Config
from ragtriage.dashboards.prometheus import serve_metrics
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer
from ragtriage.testing.redis_server import free_port
from ragtriage.testing.tls import self_signed_certificate
from tests.receivers import Receiver
from tests.test_collector import exported_rag_trace, json_request, json_span, serving
from tests.test_streams import wait_until

TOKENS = ("token-of-a", "token-of-b")


@dataclass
class Running:
    http: str
    grpc_port: int
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> dict[str, int]:
        """SIGTERM, then the counts it logged on the way out."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        return json.loads(self.output().rsplit("ragtriage collect stopped: ", 1)[1].splitlines()[0])


@contextmanager
def collect(tmp_path: Path, env: dict[str, str], *args: str, ready: bool = True) -> Iterator[Running]:
    """`ragtriage collect` in its own process, on free ports, with ``env`` over a clean environment."""
    port, grpc_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAGTRIAGE_", "OTEL_", "OPENAI", "PHOENIX"))}
    log = tmp_path / f"collect-{port}.log"
    command = [sys.executable, "-m", "ragtriage.cli", "collect", "--port", str(port), "--grpc-port", str(grpc_port),
               *args]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=base | env, stdout=out, stderr=subprocess.STDOUT)
    running = Running(f"127.0.0.1:{port}", grpc_port, log, process)
    try:
        if ready:
            wait_until(lambda: "ragtriage collect: listening" in running.output(), timeout_s=30, what="the collector")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def trace_id(spans: list[ReadableSpan]) -> str:
    return f"{spans[0].context.trace_id:032x}"


def phoenix_trace_ids(phoenix: PhoenixServer, project: str) -> set[str]:
    """The traces whose app spans (not only the collector's EVALUATOR span) reached Phoenix."""
    response = httpx.get(f"{phoenix.url}/v1/projects/{project}/spans", params={"limit": 1000})
    if response.status_code == 404:  # no span of the project arrived yet
        return set()
    return {span["context"]["trace_id"] for span in response.json()["data"] if span["name"] == "retrieve"}


def judged_questions(judge: JudgeServer) -> list[str]:
    prompts = [json.dumps(request) for request in judge.requests]
    return sorted({q for q in QUESTIONS for p in prompts if json.dumps(q)[1:-1] in p})


QUESTIONS = [f"When was the Eiffel Tower completed? (sender test {n})" for n in range(4)]


@pytest.mark.phoenix
def test_only_senders_with_a_token_get_in_over_http_and_grpc_and_each_sender_is_capped(
    phoenix: PhoenixServer, judge_server: JudgeServer, tmp_path: Path
) -> None:
    judge_server.default = Reply(verdict_json(faithfulness=0.9, confidence=0.95))
    project = f"secure-{os.getpid()}-{int(time.time())}"
    env = {
        "PHOENIX_COLLECTOR_ENDPOINT": phoenix.url,
        "PHOENIX_PROJECT_NAME": project,
        "RAGTRIAGE_SAMPLE_RATE": "1",
        "RAGTRIAGE_COLLECTOR_QUIET_S": "0.3",
        "RAGTRIAGE_LOCAL_JUDGE_URL": judge_server.url,
        "RAGTRIAGE_COLLECTOR_TOKENS": ",".join(TOKENS),
        "RAGTRIAGE_COLLECTOR_TRACES_PER_MINUTE": "2",
    }
    with collect(tmp_path, env) as running:

        def http(token: str | None) -> HttpExporter:
            headers = {"authorization": f"Bearer {token}"} if token else None
            return HttpExporter(endpoint=f"http://{running.http}/v1/traces", headers=headers, timeout=5)

        def grpc_(token: str | None) -> GrpcExporter:
            headers = {"authorization": f"Bearer {token}"} if token else None
            return GrpcExporter(endpoint=f"127.0.0.1:{running.grpc_port}", insecure=True, headers=headers, timeout=5)

        refused = [exported_rag_trace(f"refused {n}", project) for n in range(4)]
        strangers = [http(None), http("wrong"), grpc_(None), grpc_("token-of-a-but-longer")]
        for exporter, spans in zip(strangers, refused, strict=True):
            assert exporter.export(spans) == SpanExportResult.FAILURE
            exporter.shutdown()
        traces = [exported_rag_trace(q, project) for q in QUESTIONS]
        # sender a: two traces (over HTTP and gRPC) fill its cap of 2 a minute, its third is forwarded only;
        # sender b has its own cap
        senders = [http(TOKENS[0]), grpc_(TOKENS[0]), http(TOKENS[0]), grpc_(TOKENS[1])]
        for exporter, spans in zip(senders, traces, strict=True):
            assert exporter.export(spans) == SpanExportResult.SUCCESS
            exporter.shutdown()
        accepted = {trace_id(spans) for spans in traces}
        wait_until(lambda: accepted <= phoenix_trace_ids(phoenix, project), timeout_s=60, what="the spans in Phoenix")
        wait_until(lambda: len(judged_questions(judge_server)) == 3, timeout_s=30, what="three judged traces")
        judge_calls = len(judge_server.requests)

        # an unauthenticated flood (bounded, loopback): answered 401, never forwarded, never judged
        flood_ids = [f"{n + 1:032x}" for n in range(100)]
        with httpx.Client(headers={"content-type": "application/json"}) as client:
            for n, flood_id in enumerate(flood_ids):
                spans = [json_span(flood_id, "2" * 16, "", input__value=f"flood {n}", output__value="x")]
                body = json_request(flood_id, spans)
                response = client.post(f"http://{running.http}/v1/traces", content=body)
                assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        time.sleep(1.0)  # three quiet periods: had a flooded trace been taken, it would be judged by now
        stats = running.stop()

    assert judged_questions(judge_server) == [QUESTIONS[0], QUESTIONS[1], QUESTIONS[3]]  # not the over-cap one
    assert len(judge_server.requests) == judge_calls
    in_phoenix = phoenix_trace_ids(phoenix, project)
    assert accepted <= in_phoenix  # the gRPC ones too: forwarded uncompressed, which Phoenix takes
    assert not in_phoenix & ({trace_id(spans) for spans in refused} | set(flood_ids))
    assert stats["requests_unauthenticated"] == 4 + len(flood_ids)
    assert stats["requests_forwarded"] == 4 and stats["requests_received"] == 8 + len(flood_ids)
    assert stats["traces_sampled"] == 3 and stats["traces_over_sender_cap"] == 1 and stats["evaluations_ok"] == 3
    output = running.output()
    assert "(no TLS, bearer token required, 2 judged traces a minute per sender)" in output
    assert f"forwarding to {phoenix.url}/v1/traces with the senders' own credentials" in output
    assert not any(token in output for token in TOKENS)


@pytest.mark.phoenix
def test_tls_on_both_receivers_with_the_sdk_exporters_trusting_a_self_signed_certificate(
    phoenix: PhoenixServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The HTTP exporter hands certificate_file to a requests Session, whose verify these variables override
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    cert, key = self_signed_certificate(tmp_path)
    token_file = tmp_path / "tokens"
    token_file.write_text("# one token a line\nfile-token\n")
    project = f"tls-{os.getpid()}-{int(time.time())}"
    env = {"PHOENIX_COLLECTOR_ENDPOINT": phoenix.url, "RAGTRIAGE_SAMPLE_RATE": "1", "RAGTRIAGE_WRITE_BACK": "false"}
    args = ("--tls-cert", str(cert), "--tls-key", str(key), "--token-file", str(token_file))
    with collect(tmp_path, env, *args) as running:
        headers = {"authorization": "Bearer file-token"}
        over_http = HttpExporter(
            endpoint=f"https://{running.http}/v1/traces", certificate_file=str(cert), headers=headers, timeout=5
        )
        over_grpc = GrpcExporter(
            endpoint=f"127.0.0.1:{running.grpc_port}",
            credentials=grpc.ssl_channel_credentials(root_certificates=cert.read_bytes()),
            headers=headers,
            timeout=5,
        )
        traces = [exported_rag_trace(f"over TLS {n}", project) for n in range(2)]
        for exporter, spans in zip((over_http, over_grpc), traces, strict=True):
            assert exporter.export(spans) == SpanExportResult.SUCCESS
            exporter.shutdown()
        with pytest.raises(httpx.HTTPError):  # in clear, the TLS port answers nothing OTLP
            httpx.post(f"http://{running.http}/v1/traces", content=b"{}", headers=headers, timeout=3)
        untrusting = HttpExporter(endpoint=f"https://{running.http}/v1/traces", headers=headers, timeout=3)
        assert untrusting.export(exported_rag_trace("not trusted", project)) == SpanExportResult.FAILURE
        ids = {trace_id(spans) for spans in traces}
        wait_until(lambda: ids <= phoenix_trace_ids(phoenix, project), timeout_s=60, what="the spans in Phoenix")
        stats = running.stop()
    assert f"listening on OTLP/HTTP https://{running.http}/v1/traces, OTLP/gRPC" in running.output()
    assert "(TLS, bearer token required)" in running.output()
    assert stats["requests_forwarded"] == 2 and stats.get("requests_unauthenticated", 0) == 0


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (from the kernel's own table)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            words = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            raw = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
            ip = ipaddress.ip_address(raw)
            mapped = getattr(ip, "ipv4_mapped", None)  # gRPC listens on IPv6 sockets, IPv4 addresses mapped
            found.add(str(mapped or ip))
    return found


def test_the_collector_and_its_metrics_listen_on_loopback_unless_told_and_warn_when_opened_without_tokens(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    env = {"RAGTRIAGE_WRITE_BACK": "false"}
    with collect(tmp_path, env, "--forward", "", "--metrics-port", str(metrics_port)) as running:
        port = int(running.http.rsplit(":", 1)[1])
        assert listening_addresses(port) == {"127.0.0.1"}
        assert listening_addresses(running.grpc_port) == {"127.0.0.1"}
        assert listening_addresses(metrics_port) == {"127.0.0.1"}
        assert "(no TLS, no authentication)" in running.output() and "WARNING" not in running.output()
        assert "forwarding nowhere" in running.output()
    opened = env | {"RAGTRIAGE_METRICS_HOST": "0.0.0.0"}
    args = ("--forward", "", "--host", "0.0.0.0", "--metrics-port", str(metrics_port))
    with collect(tmp_path, opened, *args) as running:
        port = int(running.http.rsplit(":", 1)[1])
        assert listening_addresses(port) == listening_addresses(metrics_port) == {"0.0.0.0"}
        assert "listening on 0.0.0.0 without authentication" in running.output()
    metrics = serve_metrics(0)
    try:
        assert metrics.addr == "127.0.0.1" and listening_addresses(metrics.port) == {"127.0.0.1"}
    finally:
        metrics.shutdown()


def test_a_request_is_forwarded_with_its_own_credentials_never_the_collectors() -> None:
    own = "collector-own-phoenix-key"

    def forwarded(config: Config, headers: dict[str, str], *, own_key: bool = False) -> tuple[int, list[dict]]:
        with Receiver() as next_hop:
            coll, _ = build_collector(config, forward=next_hop.url, forward_with_own_key=own_key)
            body = json_request("a" * 32, [json_span("a" * 32, "b" * 16)])
            with serving(coll) as url:
                status = httpx.post(
                    f"{url}/v1/traces", content=body, headers={"content-type": "application/json", **headers}
                ).status_code
                if status == 200:
                    wait_until(lambda: next_hop.headers, timeout_s=10, what="the forward")
            return status, next_hop.headers

    open_ = Config(phoenix_api_key=own, write_back=False)
    secured = Config(phoenix_api_key=own, write_back=False, collector_tokens=TOKENS)
    bearer = {"authorization": f"Bearer {TOKENS[0]}"}

    # no receiver auth: the sender's own credential goes on, and none is added to a request without one
    status, [sent] = forwarded(open_, {"authorization": "Bearer senders-phoenix-key"})
    assert status == 200 and sent["authorization"] == "Bearer senders-phoenix-key"
    status, [sent] = forwarded(open_, {})
    assert status == 200 and "authorization" not in sent and "api_key" not in sent
    # receiver auth: the collector's token stays here; other credentials go on as they came
    status, [sent] = forwarded(secured, {**bearer, "api_key": "senders-key"})
    assert status == 200 and "authorization" not in sent and sent["api_key"] == "senders-key"
    # --forward-with-own-key: authenticated requests go on with the collector's key, and only those
    status, [sent] = forwarded(secured, {**bearer, "api_key": "senders-key"}, own_key=True)
    assert status == 200 and sent["authorization"] == f"Bearer {own}" and "api_key" not in sent
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKENS[0]}):
        assert forwarded(secured, headers, own_key=True) == (401, [])
    with pytest.raises(ValueError, match="needs receiver authentication"):
        build_collector(open_, forward="http://127.0.0.1:9/", forward_with_own_key=True)
    refused = subprocess.run(
        [sys.executable, "-m", "ragtriage.cli", "collect", "--port", "0", "--forward-with-own-key"],
        env={k: v for k, v in os.environ.items() if not k.startswith("RAGTRIAGE_")} | {"PHOENIX_API_KEY": own},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    said = " ".join(refused.stderr.replace("│", " ").split())  # typer's error box wraps the message
    assert refused.returncode == 2 and "needs receiver authentication" in said
    assert own not in refused.stderr + refused.stdout


def test_tokens_and_the_cap_per_sender(tmp_path: Path) -> None:
    auth = TokenAuth(TOKENS)
    assert [auth.sender(h) for h in (f"Bearer {TOKENS[1]}", f"bearer  {TOKENS[0]} ", None, "", "Bearer ")] == [
        "sender-2", "sender-1", None, None, None
    ]  # fmt: skip
    assert auth.sender(f"Basic {TOKENS[0]}") is None and auth.sender(f"Bearer {TOKENS[0]}x") is None
    assert TokenAuth().sender(None) == ANONYMOUS and not TokenAuth().enabled
    assert TOKENS[0] not in repr(auth)
    (tmp_path / "empty").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="holds no token"):
        read_token_file(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot be read"):
        read_token_file(tmp_path / "missing")

    cap = SenderCap(2)
    assert [cap.admit("a", 0.0), cap.admit("a", 1.0), cap.admit("a", 2.0), cap.admit("b", 2.0)] == [
        True, True, False, True
    ]  # fmt: skip
    assert not cap.admit("a", 20.0) and cap.admit("a", 32.0)  # refilled at 2 a minute: one every 30 s
    assert all(SenderCap(None).admit("a", 0.0) for _ in range(1000))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="per_minute"):
            SenderCap(bad)  # type: ignore[arg-type]
