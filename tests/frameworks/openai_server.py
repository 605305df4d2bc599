"""A loopback OpenAI-compatible ``/v1/chat/completions`` endpoint (plain and streamed) that answers a set reply.

The far end of the network for the plain-OpenAI-SDK app: the SDK, its instrumentor and real HTTP run as in
production. It keeps the request bodies, so a test can check what the app sent.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OpenAIServer:
    """``with OpenAIServer() as server: OpenAI(base_url=server.url, api_key="x")``; set ``server.reply``."""

    def __init__(self) -> None:
        self.reply = ""
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append(body)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self.send_error(404)
                    return
                if body.get("stream"):
                    self._stream(body)
                else:
                    self._send(200, outer._completion(body), "application/json")

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                text = outer.reply
                pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
                for n, piece in enumerate(pieces):
                    delta = {"role": "assistant", "content": piece} if n == 0 else {"content": piece}
                    self._event(outer._chunk(body, delta, None))
                self._event(outer._chunk(body, {}, "stop"))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, data: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _completion(self, body: dict[str, Any]) -> bytes:
        return json.dumps(
            {
                "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "m"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            }
        ).encode()  # fmt: skip

    def _chunk(self, body: dict[str, Any], delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-loopback", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model", "m"), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }  # fmt: skip

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
