"""A scripted OpenAI-compatible ``/v1/chat/completions`` server on loopback.

It stands in for ``vllm serve`` and for OpenAI at the far end of real HTTP, so
the judge code under test is the code that runs in production. Replies are
queued with :meth:`JudgeServer.push`; when the queue is empty, ``default``
answers (a :class:`Reply` or a function of the request body).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer. ``content`` is the assistant message; ``body`` overrides the whole response."""

    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    block: threading.Event | None = None
    prompt_tokens: int = 400
    completion_tokens: int = 120
    finish_reason: str = "stop"
    body: str | None = None
    chunked: bool = False
    """Send the body with ``Transfer-Encoding: chunked`` (as proxies and some servers do) instead of a length."""


def verdict_json(
    *,
    faithfulness: float = 0.9,
    relevance: float = 0.9,
    answer_quality: float = 0.9,
    context_recall: float = 0.9,
    context_precision: float = 0.9,
    confidence: float = 0.9,
    reasons: str = "scripted verdict",
    documents: list[dict[str, Any]] | None = None,
    claims: list[dict[str, Any]] | None = None,
) -> str:
    """A valid judge reply; pass ``claims`` for the heavy tier's claim-level schema."""
    data: dict[str, Any] = {
        "faithfulness": faithfulness,
        "relevance": relevance,
        "answer_quality": answer_quality,
        "context_recall": context_recall,
        "context_precision": context_precision,
        "confidence": confidence,
        "reasons": reasons,
        "documents": documents if documents is not None else [{"index": 1, "relevance": 0.9}],
    }
    if claims is not None:
        data["claims"] = claims
    return json.dumps(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # socketserver's default of 5 refuses bursts of concurrent judges


Responder = Callable[[dict[str, Any]], Reply]


class JudgeServer:
    """``with JudgeServer() as server: LLMJudge(model="m", base_url=server.url)``."""

    def __init__(
        self,
        *,
        default: Reply | Responder | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = ("loopback-judge",),
        max_model_len: int | None = None,
    ) -> None:
        self.default = default
        self.models = list(models)
        """What ``GET /v1/models`` lists (the chat endpoint answers for any model)."""
        self.max_model_len = max_model_len
        """Reported per model in ``/v1/models``, as vLLM does; None leaves it out, as OpenAI does."""
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        """The headers of each request, in the order of :attr:`requests` (lower-cased names)."""
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.in_flight = 0
        self._connections: set[Any] = set()
        server = self
        self._httpd = _Server((host, port), _handler(server))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="judge-server", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            if self._queue:
                return self._queue.popleft()
        if isinstance(self.default, Reply):
            return self.default
        if self.default is not None:
            return self.default(body)
        return Reply(status=500, body='{"error": {"message": "no scripted reply left"}}')

    def start(self) -> JudgeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop as a killed server would: the listening socket and every open connection are closed."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server._connections.add(self.connection)

        def finish(self) -> None:
            with server._lock:
                server._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                cards = [{"id": m, "object": "model", "created": 0, "owned_by": "loopback"} for m in server.models]
                if server.max_model_len is not None:
                    for card in cards:
                        card["max_model_len"] = server.max_model_len
                status, data = 200, json.dumps({"object": "list", "data": cards}).encode()
            else:
                status, data = 404, b'{"error": {"message": "not found"}}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            reply = server._next(body, {k.lower(): v for k, v in self.headers.items()})
            with server._lock:
                server.in_flight += 1
            try:
                if reply.block is not None:
                    reply.block.wait(timeout=60)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
            finally:
                with server._lock:
                    server.in_flight -= 1
            payload = reply.body if reply.body is not None else _completion(body, reply)
            data = payload.encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    half = len(data) // 2
                    data = (
                        b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (data[:half], data[half:]) if c) + b"0\r\n\r\n"
                    )
                else:
                    self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): that is what was being tested

    return Handler


def _completion(request: dict[str, Any], reply: Reply) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-loopback",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "loopback"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }
    )
