"""Loopback stand-ins for Slack and PagerDuty: real HTTP, payloads checked against what they document."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from typing_extensions import Self

from ragtriage.alerts import AlertEvent


class LoopbackServer:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread, for ``with``; subclasses give the handler."""

    path = ""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Receiver(LoopbackServer):
    """Records bodies (and the JSON ones parsed); answers ``status``/``body``, or hangs while ``hang`` is set."""

    def __init__(self, *, status: int = 200, body: str = "ok") -> None:
        self.status, self.body = status, body
        self.hang = threading.Event()
        self.received: list[dict[str, Any]] = []  # the JSON bodies
        self.bodies: list[bytes] = []  # every body, as received
        self.headers: list[dict[str, str]] = []  # every request's headers, names lower-cased
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.bodies.append(raw)
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                with contextlib.suppress(ValueError):  # e.g. an OTLP/protobuf request forwarded here
                    receiver.received.append(json.loads(raw))
                if receiver.hang.is_set():
                    receiver.release.wait(30)
                payload = receiver.body.encode()
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.release = threading.Event()
        super().__init__(Handler)

    path = "/hook"

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        super().__exit__(*exc)


def check_slack_payload(payload: dict[str, Any]) -> None:
    """Slack's documented limits for incoming-webhook Block Kit messages."""
    assert isinstance(payload["text"], str) and payload["text"]
    blocks = payload["blocks"]
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        kind = block["type"]
        assert kind in {"header", "section", "actions", "context", "divider"}
        if kind == "header":
            assert block["text"]["type"] == "plain_text" and 0 < len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] in {"mrkdwn", "plain_text"} and len(block["text"]["text"]) <= 3000
            for f in block.get("fields", []):
                assert f["type"] in {"mrkdwn", "plain_text"} and len(f["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        elif kind == "actions":
            assert 1 <= len(block["elements"]) <= 25
            for element in block["elements"]:
                assert element["type"] == "button" and len(element["text"]["text"]) <= 75
                assert element["url"].startswith("http") and len(element["url"]) <= 3000
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10


def check_pagerduty_event(event: dict[str, Any]) -> None:
    """PagerDuty Events API v2: required fields and allowed values."""
    assert event["event_action"] in {"trigger", "acknowledge", "resolve"}
    assert event["routing_key"] and 0 < len(event["dedup_key"]) <= 255
    if event["event_action"] == "trigger":
        body = event["payload"]
        assert 0 < len(body["summary"]) <= 1024 and body["source"]
        assert body["severity"] in {"critical", "error", "warning", "info"}
        for link in event.get("links", []):
            assert link["href"].startswith("http")


class ListSink:
    """An alert sink that keeps what it is sent, in memory: the far end a test reads."""

    name = "list"

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    async def send(self, event: AlertEvent) -> None:
        self.events.append(event)
