"""ragtriage's own HTTP calls in the host app's logs: no secret at any level, no INFO line, and the app's own
httpx calls logging exactly as before. Real HTTP to loopback receivers, a real redis-server with a password,
the real in-app path; nothing of ragtriage is mocked."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

import ragtriage
from ragtriage import Config, LLMJudge, RAGEvaluator
from ragtriage._log_hygiene import REDACTED, THIRD_PARTY_LOGGERS, install, own_http, redact
from ragtriage.alerts import AlertManager, MetricRule
from ragtriage.alerts.sinks import EmailSink, PagerDutySink, SlackSink, WebhookSink
from ragtriage.evaluator.cache import RedisCache
from ragtriage.export.phoenix import PhoenixWriter
from ragtriage.instrumentation.instrument import installed_processor
from ragtriage.sample import Document, RAGSample
from ragtriage.testing import JudgeServer
from ragtriage.testing.judge_server import Reply, verdict_json
from ragtriage.testing.redis_server import RedisServer
from tests.receivers import LoopbackServer, Receiver

LOCAL_KEY = "sk-local-secret-4f1c9a0e"
HEAVY_KEY = "sk-heavy-secret-77ab21d3"
SLACK_PATH = "services/T0SECRET/B0SECRET/slackhooksecret9x"
WEBHOOK_TOKEN = "whtok-secret-5d2e81"
WEBHOOK_HEADER = "wh-header-secret-c3f0aa"
ROUTING_KEY = "pd-routing-secret-a9e1b2"
REDIS_PASSWORD = "redis-pass-secret-0b7d44"
PHOENIX_KEY = "phx-key-secret-661290"
SMTP_PASSWORD = "smtp-pass-secret-3e3e3e"
SECRETS = (
    LOCAL_KEY,
    HEAVY_KEY,
    "slackhooksecret9x",
    "T0SECRET",
    WEBHOOK_TOKEN,
    WEBHOOK_HEADER,
    ROUTING_KEY,
    REDIS_PASSWORD,
    PHOENIX_KEY,
    SMTP_PASSWORD,
)
# An answer the free tiers cannot decide, so the (scripted, unhappy) judges do: their calls are what is logged.
QUESTION, ANSWER = "What is the capital of France?", "The capital of France is its largest city."
CONTEXTS = ["Paris is the capital and largest city of France."]
RULES = [
    MetricRule(name="faithfulness_low", metric="faithfulness", threshold=0.7, window_size=5, min_samples=2,
               cooldown_s=3600.0)
]  # fmt: skip


class Capture(logging.Handler):
    """What the app's log files would hold: every record that reaches a NOTSET root handler, formatted with
    its args and exception text at emit time (after the loggers' filters ran)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def leaks(self) -> list[str]:
        texts = self.lines + [r.getMessage() for r in self.records] + [r.exc_text or "" for r in self.records]
        return [t for t in texts if any(s in t for s in SECRETS)]

    def at_or_above(self, level: int) -> list[str]:
        return [line for record, line in zip(self.records, self.lines, strict=True) if record.levelno >= level]


@pytest.fixture
def app_logging() -> Iterator[Callable[[int], Capture]]:
    """The app's logging: ``basicConfig(level=...)`` style, a NOTSET handler on the root logger."""
    root = logging.getLogger()
    saved = root.level
    handlers: list[Capture] = []

    def configure(level: int) -> Capture:
        handler = Capture()
        handlers.append(handler)
        root.addHandler(handler)
        root.setLevel(level)
        return handler

    yield configure
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(saved)


class PhoenixStandIn(LoopbackServer):
    """Takes Phoenix's OTLP ``/v1/traces`` and REST annotation POSTs, answers 200; counts them by path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stand_in.paths.append(self.path.split("?")[0])
                body = b'{"data": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST

        super().__init__(Handler)


def require_password(redis: RedisServer, password: str) -> str:
    """``requirepass`` on the running redis-server (what ``--requirepass`` does at start); the URL that logs in."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as conn:
        conn.sendall(f"CONFIG SET requirepass {password}\r\n".encode())
        assert conn.recv(64).startswith(b"+OK")
    return f"redis://:{password}@127.0.0.1:{redis.port}/0"


def redis_keys(redis: RedisServer, password: str) -> int:
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as conn:
        conn.sendall(f"AUTH {password}\r\nDBSIZE\r\n".encode())
        reply = b""
        while reply.count(b"\r\n") < 2:
            reply += conn.recv(64)
    ok, size = reply.split(b"\r\n")[:2]
    assert ok == b"+OK", reply
    return int(size.lstrip(b":"))


def judges_answer_badly(local: JudgeServer, heavy: JudgeServer) -> None:
    """Local unsure (so the heavy judge runs too) and both low: the faithfulness alert fires."""
    local.default = Reply(verdict_json(faithfulness=0.1, confidence=0.2))
    heavy.default = Reply(
        verdict_json(faithfulness=0.1, confidence=0.95, claims=[{"claim": "c", "supported": False, "context_index": 1}])
    )


def rag_request(provider: TracerProvider) -> None:
    """An app without OpenInference: the three ``ragtriage.*`` attributes on its root span."""
    tracer = provider.get_tracer("app")
    attributes = {"ragtriage.question": QUESTION, "ragtriage.answer": ANSWER, "ragtriage.contexts": CONTEXTS}
    with tracer.start_as_current_span("rag", attributes=attributes), tracer.start_as_current_span("retrieve"):
        pass


def wait_for(condition: Callable[[], bool], *, timeout_s: float = 20.0, tick: Callable[[], None] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if tick is not None:
            tick()
        time.sleep(0.1)
    return condition()


def test_no_secret_reaches_any_log_record_at_debug_on_the_in_app_path(
    app_logging: Callable[[int], Capture], judge_server: JudgeServer, heavy_server: JudgeServer,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    logs = app_logging(logging.DEBUG)
    judges_answer_badly(judge_server, heavy_server)
    redis_url = require_password(redis_server, REDIS_PASSWORD)
    provider = TracerProvider()
    with Receiver() as slack, Receiver() as webhook, Receiver() as pagerduty, PhoenixStandIn() as phoenix:
        try:
            ragtriage.instrument(
                tracer_provider=provider, auto_instrument=False, sample_rate=1.0, project_name="shop",
                endpoint=phoenix.url, phoenix_api_key=PHOENIX_KEY,
                # a vLLM behind basic auth: the password rides in the URL
                local_judge_url=judge_server.url.replace("http://", f"http://vllm:{LOCAL_KEY}@"),
                heavy_judge_url=heavy_server.url, openai_api_key=HEAVY_KEY,
                redis_url=redis_url,
                alert_sinks=[
                    SlackSink(f"{slack.url}/{SLACK_PATH}"),
                    WebhookSink(f"{webhook.url}?token={WEBHOOK_TOKEN}", headers={"X-Token": WEBHOOK_HEADER}),
                    PagerDutySink(ROUTING_KEY, url=pagerduty.url),
                ],
                alert_rules=RULES,
            )  # fmt: skip
            processor = installed_processor()
            assert processor is not None

            def one_more_request() -> None:
                rag_request(provider)
                processor.force_flush(10_000)

            # rules run at most once a second: send requests until every sink has heard of the alert
            assert wait_for(lambda: bool(slack.received and webhook.received and pagerduty.received),
                            tick=one_more_request)  # fmt: skip
        finally:
            ragtriage.uninstrument()
            provider.shutdown()
        assert pagerduty.received[0]["routing_key"] == ROUTING_KEY  # the secrets were really used
        assert "/v1/traces" in phoenix.paths and "/v1/span_annotations" in phoenix.paths
    assert judge_server.requests and heavy_server.requests
    assert redis_keys(redis_server, REDIS_PASSWORD) > 0  # the cache logged in with the password and wrote
    assert logs.leaks() == []
    # the calls were logged (at DEBUG, redacted): the capture saw them
    requests = [line for line in logs.lines if "HTTP Request: POST" in line]
    assert any(line.startswith("DEBUG httpx ") and REDACTED in line for line in requests)
    # the judges' calls go through ragtriage's own HTTP client (#19), which logs nothing at all
    assert not any("/v1/chat/completions" in line for line in logs.lines)
    assert not any(line.startswith("INFO ") for line in requests)
    # every library logger that logged ragtriage's calls is one the filter is on (a logger's filter sees
    # only the records that exact logger creates)
    libraries = {r.name for r in logs.records if r.name.split(".")[0] in {"httpx", "httpx2", "httpcore", "httpcore2",
                                                                          "openai", "urllib3"}}  # fmt: skip
    assert libraries and libraries <= set(THIRD_PARTY_LOGGERS)


async def test_no_secret_when_the_calls_fail(
    app_logging: Callable[[int], Capture], judge_server: JudgeServer, heavy_server: JudgeServer,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    """Failures are where URLs end up in exception text: rejecting sinks, a judge answering 401, a wrong
    Redis password, and Phoenix unreachable."""
    logs = app_logging(logging.DEBUG)
    require_password(redis_server, REDIS_PASSWORD)
    judges_answer_badly(judge_server, heavy_server)
    judge_server.default = Reply(status=401, body='{"error": {"message": "Incorrect API key provided"}}')
    with Receiver(status=404) as webhook, Receiver(status=500) as slack:
        evaluator = RAGEvaluator(
            sample_rate=1.0, local_judge=LLMJudge(model="m", base_url=judge_server.url, api_key=LOCAL_KEY),
            heavy_judge=LLMJudge(model="gpt-4o-mini", base_url=heavy_server.url, api_key=HEAVY_KEY),
            cache=RedisCache(f"redis://:wrong-{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/0"),
        )  # fmt: skip
        alerts = AlertManager(RULES, [
            WebhookSink(f"{webhook.url}?token={WEBHOOK_TOKEN}", headers={"Authorization": f"Bearer {WEBHOOK_HEADER}"}),
            SlackSink(f"{slack.url}/{SLACK_PATH}"),
        ], evaluate_every_s=0, max_retries=0)  # fmt: skip
        try:
            for _ in range(3):
                result = await evaluator.evaluate(QUESTION, ANSWER, CONTEXTS)
                alerts.observe(result)
            await alerts.flush()
        finally:
            await evaluator.aclose()
        assert judge_server.requests and heavy_server.requests  # the local judge's 401 sent it to the heavy one
        assert webhook.received and slack.received
    writer = PhoenixWriter(endpoint="http://127.0.0.1:9/", project_name="shop", api_key=PHOENIX_KEY, max_retries=0)
    sample = RAGSample(
        trace_id=1, root_span_id=2, question=QUESTION, answer=ANSWER, documents=[Document(CONTEXTS[0], span_id=3)]
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever the transport raised; only the logs matter here
        await writer.write(sample, result)
    await writer.aclose()
    assert logs.leaks() == []
    warnings = logs.at_or_above(logging.WARNING)
    assert any("alert sink webhook failed" in w and "HTTP 404" in w for w in warnings)
    cache_down = [w for w in warnings if "Redis cache unavailable" in w]
    assert len(cache_down) == 1 and "RAGTRIAGE_REDIS_URL" in cache_down[0]  # once, naming the setting


async def test_at_info_ragtriage_adds_no_line_and_the_apps_own_httpx_calls_log_as_before(
    app_logging: Callable[[int], Capture], judge_server: JudgeServer, heavy_server: JudgeServer
) -> None:
    logs = app_logging(logging.INFO)
    judges_answer_badly(judge_server, heavy_server)
    with Receiver() as slack, Receiver() as webhook, Receiver() as pagerduty, PhoenixStandIn() as phoenix:
        evaluator = RAGEvaluator(
            sample_rate=1.0,
            local_judge=LLMJudge(model="m", base_url=judge_server.url, api_key=LOCAL_KEY),
            heavy_judge=LLMJudge(model="gpt-4o-mini", base_url=heavy_server.url, api_key=HEAVY_KEY),
        )
        alerts = AlertManager(RULES, [
            SlackSink(f"{slack.url}/{SLACK_PATH}"), WebhookSink(f"{webhook.url}?token={WEBHOOK_TOKEN}"),
            PagerDutySink(ROUTING_KEY, url=pagerduty.url),
        ], evaluate_every_s=0)  # fmt: skip
        writer = PhoenixWriter(endpoint=phoenix.url, project_name="shop", api_key=PHOENIX_KEY)
        try:
            for i in range(3):
                result = await evaluator.evaluate(QUESTION, ANSWER, CONTEXTS)
                alerts.observe(result)
                sample = RAGSample(trace_id=i + 1, root_span_id=7, question=QUESTION, answer=ANSWER,
                                   documents=[Document(CONTEXTS[0], span_id=8)])  # fmt: skip
                await writer.write(sample, result)
            await alerts.flush()
        finally:
            await evaluator.aclose()
            await writer.aclose()
        assert slack.received and webhook.received and pagerduty.received and phoenix.paths
        assert heavy_server.requests and writer.counts["writes"] == 3
        # Nothing reached the app's handler, not even as DEBUG: basicConfig(level=INFO) leaves its handler at
        # NOTSET, so a record demoted but not dropped would still be printed.
        assert logs.lines == []

        # The app's own calls, to the same kind of URL, on the same loggers: logged at INFO, URL and all.
        app_url = f"{slack.url}/app-own?token=app-visible-token"
        async with httpx.AsyncClient() as client:
            (await client.post(app_url, json={})).raise_for_status()
        with httpx.Client() as client:
            client.post(app_url, json={}).raise_for_status()
    assert len(logs.lines) == 2
    assert all(line.startswith("INFO httpx HTTP Request: POST ") and app_url in line for line in logs.lines)


def test_the_apps_records_are_untouched_even_while_ragtriage_is_mid_call(app_logging: Callable[[int], Capture]) -> None:
    """The marker is per context: another thread of the app logging on the same logger at the same moment
    keeps its level and text."""
    logs = app_logging(logging.INFO)
    inside, done = threading.Event(), threading.Event()

    def ragtriage_call() -> None:
        with own_http("secret-of-ragtriage"):
            inside.set()
            done.wait(5)
            logging.getLogger("httpx").info("HTTP Request: POST http://h/secret-of-ragtriage")

    thread = threading.Thread(target=ragtriage_call)
    thread.start()
    assert inside.wait(5)
    logging.getLogger("httpx").info("HTTP Request: POST %s", "http://app/secret-of-ragtriage")
    done.set()
    thread.join(5)
    assert logs.lines == ["INFO httpx HTTP Request: POST http://app/secret-of-ragtriage"]


def test_the_filter_never_raises_and_installs_once(app_logging: Callable[[int], Capture]) -> None:
    logs = app_logging(logging.DEBUG)
    install()
    install()
    for name in THIRD_PARTY_LOGGERS:
        filters = [f for f in logging.getLogger(name).filters if type(f).__name__ == "_OwnCallFilter"]
        assert len(filters) == 1, name
    httpx_logger = logging.getLogger("httpx")
    with own_http("k-secret-1234"):
        httpx_logger.info("%d requests", "not a number")  # a broken record inside the marker: dropped
        try:
            raise RuntimeError("failed for http://h/hook?key=k-secret-1234")
        except RuntimeError:
            httpx_logger.warning("boom", exc_info=True)
        httpx_logger.debug("stack", stack_info=True)
    assert [r.levelname for r in logs.records] == ["WARNING", "DEBUG"]  # warnings keep their level
    assert logs.leaks() == [] and "k-secret-1234" not in "".join(logs.lines)
    assert logs.records[0].exc_info is None and REDACTED in (logs.records[0].exc_text or "")


@pytest.mark.parametrize(
    ("text", "secrets", "gone", "kept"),
    [
        ('POST https://hooks.slack.com/services/T1/B2/xyz9 "HTTP/1.1 200"', ("https://hooks.slack.com/services/T1/B2/xyz9",),
         "services/T1", "https://hooks.slack.com/"),
        ("POST https://h.example/hook?token=a%20b", ("https://h.example/hook?token=a b",), "a%20b", "https://h.example/"),
        ("redis://:pw-1234@127.0.0.1:6379/0", (), "pw-1234", "127.0.0.1:6379"),
        ("https://user:pw-1234@judge.internal/v1", (), "pw-1234", "judge.internal/v1"),
        ("headers={'Authorization': 'Bearer sk-abc123'}", (), "sk-abc123", "Authorization"),
        ("[(b'x-api-key', b'sk-abc123')]", (), "sk-abc123", "x-api-key"),
        ('{"routing_key": "R0UTING", "event_action": "trigger"}', (), "R0UTING", "event_action"),
        ("api-key: sk-abc123", (), "sk-abc123", "api-key"),
        ("POST http://p.example/v1?token=t0k3n-value max_tokens=1024", (), "t0k3n-value", "max_tokens=1024"),
    ],
)  # fmt: skip
def test_redact_shapes(text: str, secrets: tuple[str, ...], gone: str, kept: str) -> None:
    cleaned = redact(text, secrets)
    assert gone not in cleaned and kept in cleaned and REDACTED in cleaned


def test_the_repr_of_every_object_holding_a_secret_hides_it() -> None:
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"
    # Every Config field marked secret, now and as fields are added, holds a secret of its shape.
    secret_fields = [f for f in dataclasses.fields(Config) if f.metadata.get("secret")]
    assert {"openai_api_key", "redis_url", "phoenix_api_key"} <= {f.name for f in secret_fields}
    values: dict[str, Any] = {
        f.name: f"https://user:{HEAVY_KEY}@h.example/{SLACK_PATH}?token={WEBHOOK_TOKEN}"
        if f.name.endswith("_url") and "redis" not in f.name and "queue" not in f.name
        else redis_url
        if f.name.endswith("_url")
        else f"{ROUTING_KEY}-{f.name}"
        for f in secret_fields
    }
    where = next(f for f in dataclasses.fields(Config) if f.name == "evaluate_in")
    if "queue_url" in values and "queue" in where.metadata.get("choices", ()):
        values["evaluate_in"] = "queue"  # a queue URL needs it
    # Not secret themselves, but a URL may carry a password: shown without it.
    values["local_judge_url"] = f"https://user:{LOCAL_KEY}@judge.internal/v1"
    config = Config(**values)
    judge = LLMJudge(model="m", base_url=f"https://user:{LOCAL_KEY}@judge.internal/v1", api_key=HEAVY_KEY)
    cache = RedisCache(redis_url)
    holders = [
        config,
        SlackSink(f"https://hooks.slack.com/{SLACK_PATH}"),
        WebhookSink(f"https://h.example/hook?token={WEBHOOK_TOKEN}", headers={"Authorization": WEBHOOK_HEADER}),
        PagerDutySink(ROUTING_KEY),
        EmailSink(host="smtp.example", sender="a@b.c", recipients=["d@e.f"], username="u", password=SMTP_PASSWORD),
        judge,
        cache,
        PhoenixWriter(endpoint=f"https://user:{PHOENIX_KEY}@phoenix.internal/", project_name="p", api_key=PHOENIX_KEY),
        RAGEvaluator(local_judge=judge, cache=cache),
    ]
    for holder in holders:
        shown = f"{holder!r} {holder!s}"
        assert not any(s in shown for s in SECRETS), shown
    assert "judge.internal" in repr(judge)  # what is not secret still helps


def test_the_filtered_loggers_are_the_ones_the_libraries_log_on() -> None:
    """A logger's filter sees only what that exact logger creates: if a library renamed its logger, the
    filter would miss it silently. The names are read from the installed libraries' modules."""
    import httpcore._async.connection
    import httpcore._async.http11
    import httpcore2._async.connection
    import httpcore2._async.http11
    import httpx._client
    import httpx2._client
    import openai._base_client

    used = {
        httpx._client.logger.name,
        httpx2._client.logger.name,
        httpcore._async.http11.logger.name,
        httpcore._async.connection.logger.name,
        httpcore2._async.http11.logger.name,
        httpcore2._async.connection.logger.name,
        openai._base_client.log.name,
    }
    assert used <= set(THIRD_PARTY_LOGGERS)
