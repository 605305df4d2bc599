"""A lean HTTP/1.1 keep-alive client for judge calls: JSON POST and GET, nothing else.

Why not the ``openai`` SDK or httpx: measured in ``bench/cascade.py``, the SDK costs 3 to 7 ms of
client CPU per chat completion (request transformation, response models, httpx's pool), its
aiohttp transport still about 5 ms, and aiohttp alone about 1 to 1.4 ms; a POST on asyncio streams
costs about 0.3 to 0.5 ms. A judge call is one small JSON request and one JSON reply, so this module
does exactly that: one pool of idle connections per origin and event loop, ``Content-Length`` or
chunked replies, TLS with certifi's roots when available. No proxies, no redirects, no compression.

A request on a reused connection that the server had already closed (keep-alive races) is sent
once more on a fresh connection, as httpx and aiohttp do; any other failure is the caller's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ragtriage._version import __version__
from ragtriage.errors import TransportError

_USER_AGENT = f"ragtriage/{__version__}".encode()
_MAX_HEAD = 64 * 1024


if sys.version_info >= (3, 11):
    timeout = asyncio.timeout  # no extra task per call, unlike wait_for
else:  # pragma: no cover

    @contextlib.asynccontextmanager
    async def timeout(delay: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        handle = asyncio.get_running_loop().call_later(delay, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            raise asyncio.TimeoutError from None
        finally:
            handle.cancel()


def error_message(body: bytes) -> str:
    """The message of an error reply: OpenAI's ``{"error": {"message": ...}}`` or older vLLM's ``{"message": ...}``."""
    try:
        data = json.loads(body)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("message")
    except (ValueError, AttributeError, KeyError, TypeError):
        return ""
    return str(message)[:300] if message else ""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass(frozen=True, slots=True, repr=False)
class Origin:
    """Where requests go: ``http(s)://host:port`` plus the path prefix of the base URL (``/v1``)."""

    scheme: str
    host: str
    port: int
    prefix: str
    basic_auth: tuple[bytes, ...] = ()
    """``user:password@`` in the URL, as an ``Authorization: Basic`` header (a vLLM behind a proxy with basic auth)."""

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        auth: tuple[bytes, ...] = ()
        if parts.username is not None:
            user_password = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = (b"Authorization: Basic " + base64.b64encode(user_password),)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), auth)

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode()


_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _tls
    if _tls is None:
        try:
            import certifi

            _tls = ssl.create_default_context(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with httpx
            _tls = ssl.create_default_context()
    return _tls


class ConnectionPool:
    """Idle keep-alive connections to one origin, for one event loop (streams belong to their loop)."""

    def __init__(self, origin: Origin, *, max_idle: int = 64) -> None:
        self.origin = origin
        self.max_idle = max_idle
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: bytes, path: str, body: bytes = b"", headers: tuple[bytes, ...] = ()) -> Response:
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: application/json\r\n" % (
            method,
            (self.origin.prefix + path).encode(),
            self.origin.host_header,
            _USER_AGENT,
        )
        if method == b"POST":
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        message = head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, message, method)
            except _StaleConnection:
                continue  # closed by the server while idle: the request never reached it
        reader, writer = await self._connect()
        try:
            return await self._exchange(reader, writer, message, method)
        except _StaleConnection as exc:
            raise TransportError("server closed the connection without a reply") from exc.__cause__

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        origin = self.origin
        tls = _tls_context() if origin.scheme == "https" else None
        try:
            return await asyncio.open_connection(origin.host, origin.port, ssl=tls, limit=_MAX_HEAD)
        except OSError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes, method: bytes
    ) -> Response:
        reusable = False
        try:
            try:
                writer.write(message)
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                raise _StaleConnection() from exc
            except (ConnectionError, OSError) as exc:
                raise _StaleConnection() from exc
            response, reusable = await _read_response(reader, head)
            return response
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            # Cancelled (a timeout) or failed: the connection is in an unknown state, never reused.
            if reusable and len(self._idle) < self.max_idle:
                self._idle.append((reader, writer))
            else:
                writer.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()


class _StaleConnection(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader, head: bytes) -> tuple[Response, bool]:
    status_line, _, rest = head.partition(b"\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in rest.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close" and parts[0] != b"HTTP/1.0"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:  # delimited by the end of the connection
        body = await reader.read()
        keep_alive = False
    return Response(status, headers, body), keep_alive
