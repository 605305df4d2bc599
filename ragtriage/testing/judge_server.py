"""A scripted OpenAI-compatible ``/v1/chat/completions`` server on loopback.

It stands in for ``vllm serve`` and for OpenAI at the far end of real HTTP, so
the judge code under test is the code that runs in production. Replies are
queued with :meth:`JudgeServer.push`; when the queue is empty, ``default``
answers (a :class:`Reply` or a function of the request body).
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
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
        self.batch = BatchAPI(self)
        """The files and batches endpoints (``/v1/files``, ``/v1/batches``), as OpenAI documents them."""
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
        return f"http://{host!s}:{port}/v1"

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def _next(self, body: dict[str, Any], headers: dict[str, str], *, batched: bool = False) -> Reply:
        with self._lock:
            if batched:
                self.batch.requests.append(body)
            else:
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

        def _send(self, status: int, data: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if "/files/" in self.path or "/batches/" in self.path:
                self._send(*server.batch.get(self.path))
                return
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
            raw = self.rfile.read(length)
            if self.path.rstrip("/").endswith(("/files", "/batches", "/cancel")):
                self._send(*server.batch.post(self.path, raw, self.headers.get("Content-Type", "")))
                return
            body = json.loads(raw or b"{}")
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


class BatchAPI:
    """OpenAI's Batch API on the loopback server: upload a JSONL file, create a batch, retrieve it, cancel it,
    download its output and error files. Each line is answered by the server's chat replies (:meth:`JudgeServer.push`,
    ``default``) when the batch runs; lines answered with an HTTP error go to the error file.

    ``polls`` is how many retrieves see the batch ``in_progress`` before it ends (``None``: it never ends, as a
    batch that outlives the run's wait); ``outcome`` is how it ends: ``completed``, ``failed`` or ``expired``.
    """

    def __init__(self, server: JudgeServer) -> None:
        self._server = server
        self.polls: int | None = 1
        self.outcome = "completed"
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (purpose, content)
        self.batches: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        """The chat requests answered inside batches (:attr:`JudgeServer.requests` has the synchronous ones)."""
        self.cancelled: list[str] = []
        self._retrieves: dict[str, int] = {}

    def post(self, path: str, raw: bytes, content_type: str) -> tuple[int, bytes]:
        if path.endswith("/files"):
            fields = _multipart(raw, content_type)
            if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
                return _error(400, "multipart fields 'file' and purpose='batch' are required")
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = ("batch", fields["file"][1])
            return 200, json.dumps(self._file(file_id, fields["file"][0] or "input.jsonl")).encode()
        if path.endswith("/batches"):
            body = json.loads(raw or b"{}")
            if body.get("input_file_id") not in self.files:
                return _error(404, f"No such File object: {body.get('input_file_id')}")
            if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
                return _error(400, "endpoint must be /v1/chat/completions and completion_window 24h")
            lines = _lines(self.files[body["input_file_id"]][1])
            if len({line["custom_id"] for line in lines}) != len(lines):
                return _error(400, "custom_id values must be unique")
            batch_id = f"batch_{len(self.batches) + 1}"
            now = int(time.time())
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                "expires_at": now + 86400, "completed_at": None, "failed_at": None, "expired_at": None,
                "cancelling_at": None, "cancelled_at": None, "metadata": body.get("metadata"),
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            }  # fmt: skip
            self._retrieves[batch_id] = 0
            return 200, json.dumps(self.batches[batch_id]).encode()
        batch_id = path.rstrip("/").split("/")[-2]
        if batch_id not in self.batches:
            return _error(404, f"No such Batch object: {batch_id}")
        batch = self.batches[batch_id]
        if batch["status"] in ("validating", "in_progress", "finalizing"):
            batch.update(status="cancelling", cancelling_at=int(time.time()))
            self.cancelled.append(batch_id)
        return 200, json.dumps(batch).encode()

    def get(self, path: str) -> tuple[int, bytes, str]:
        parts = path.rstrip("/").split("/")
        if parts[-1] == "content" and parts[-3] == "files":
            if parts[-2] not in self.files:
                return (*_error(404, f"No such File object: {parts[-2]}"), "application/json")
            return 200, self.files[parts[-2]][1], "application/octet-stream"
        batch = self.batches.get(parts[-1])
        if parts[-2] != "batches" or batch is None:
            return (*_error(404, f"No such Batch object: {parts[-1]}"), "application/json")
        self._retrieves[batch["id"]] += 1
        if batch["status"] == "cancelling":
            batch.update(status="cancelled", cancelled_at=int(time.time()))
        elif batch["status"] in ("validating", "in_progress"):
            batch.update(status="in_progress", in_progress_at=batch["in_progress_at"] or int(time.time()))
            if self.polls is not None and self._retrieves[batch["id"]] > self.polls:
                self._end(batch)
        return 200, json.dumps(batch).encode(), "application/json"

    def _end(self, batch: dict[str, Any]) -> None:
        now = int(time.time())
        if self.outcome != "completed":
            batch.update(status=self.outcome, **{f"{self.outcome}_at": now})
            if self.outcome == "failed":
                batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "scripted"}]}
            return
        outputs: list[str] = []
        errors: list[str] = []
        for i, line in enumerate(_lines(self.files[batch["input_file_id"]][1]), 1):
            reply = self._server._next(line["body"], {}, batched=True)
            body = json.loads(reply.body) if reply.body is not None else json.loads(_completion(line["body"], reply))
            record = {
                "id": f"batch_req_{i}",
                "custom_id": line["custom_id"],
                "response": {"status_code": reply.status, "request_id": f"req_{i}", "body": body},
                "error": None,
            }
            (outputs if reply.status == 200 else errors).append(json.dumps(record))
        for kind, records in (("output", outputs), ("error", errors)):
            if records:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = (f"batch_{kind}", ("\n".join(records) + "\n").encode())
                batch[f"{kind}_file_id"] = file_id
        batch.update(
            status="completed",
            finalizing_at=now,
            completed_at=now,
            request_counts={"total": len(outputs) + len(errors), "completed": len(outputs), "failed": len(errors)},
        )

    def _file(self, file_id: str, filename: str) -> dict[str, Any]:
        purpose, content = self.files[file_id]
        return {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
            "filename": filename, "purpose": purpose, "status": "processed",
        }  # fmt: skip


def _lines(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.decode().splitlines() if line.strip()]


def _error(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


def _multipart(raw: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (filename, content)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


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
