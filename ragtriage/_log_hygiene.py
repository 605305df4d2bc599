"""Keep ragtriage's own HTTP calls out of the host app's logs: no secrets at any level, no INFO lines.

httpx/httpx2 log every request at INFO with its full URL (a Slack or webhook URL *is* the
credential), httpcore/httpcore2 and the openai SDK log at DEBUG, urllib3 (Phoenix's OTLP
exporter) at DEBUG and WARNING. The app shares these loggers with ragtriage, and its own
requests must keep logging exactly as before. So ragtriage marks its calls with
:func:`own_http` (a ``contextvars`` marker, which follows ``await``, ``asyncio.wait_for``'s task
and ``asyncio.to_thread``), and :func:`install` puts a filter on each of those loggers that
touches only records made inside the marker:

* INFO (anything between DEBUG and WARNING) becomes DEBUG, and is dropped when the emitting
  logger is not enabled for DEBUG. Demoting ``levelno`` alone is not enough: ``callHandlers``
  compares it with each handler's level only, and ``basicConfig(level=INFO)`` leaves its handler
  at NOTSET, so the record would still be printed;
* the message (formatted, its args dropped), exception and stack text are redacted: the secrets
  the call passed (the path and query of a secret URL, keys), then any ``user:password@`` in a
  URL, ``Bearer``/``Basic`` credentials and ``authorization``/``api-key``/``routing_key``-style
  values.

A logger's filters see only the records that logger creates, not its children's nor propagated
ones, so every logger that emits is listed in :data:`THIRD_PARTY_LOGGERS` by its exact name.
Outside the marker the filter is one ``ContextVar.get``; it never raises.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

#: The exact names of the loggers that log ragtriage's HTTP calls (as of httpx 0.28, httpx2 2.16,
#: httpcore 1.0, httpcore2 2.16, openai 1.x-3.x, urllib3 2.x).
THIRD_PARTY_LOGGERS: tuple[str, ...] = (
    "httpx",
    "httpx2",
    *(
        f"{core}.{part}"
        for core in ("httpcore", "httpcore2")
        for part in ("connection", "http11", "http2", "proxy", "socks")
    ),
    "openai",
    "openai._base_client",
    "openai._response",
    "openai._legacy_response",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.util.retry",
)
REDACTED = "<redacted>"
#: Shorter strings are not redacted: they would shred every line and protect nothing.
MIN_SECRET_CHARS = 4

_own: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("ragtriage_own_http", default=None)
_installed = False
_install_lock = threading.Lock()

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@'\"<>]+@")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[^\s'\",;)}\]]+")
_KEYED = re.compile(
    r"(?i)(\b(?:(?:proxy-)?authorization|api[-_]?key|routing[-_]?key|password|passwd|secret|access[-_]?token|token)"
    r"\b['\"]?\s*[:=,]\s*b?['\"]?)(?!<redacted>|bearer\s|basic\s|token\s)[^\s'\",;&)}\]]+"
)


@contextmanager
def own_http(*secrets: str | None) -> Iterator[None]:
    """Mark the HTTP calls made inside as ragtriage's: their library log records are demoted to DEBUG
    and ``secrets`` (keys; for a URL, its path and query) are redacted from them. Nests; ``None`` is skipped."""
    install()
    outer = _own.get()
    token = _own.set((*(outer or ()), *(s for s in secrets if isinstance(s, str) and s)))
    try:
        yield
    finally:
        _own.reset(token)


def install() -> None:
    """Attach the filter to :data:`THIRD_PARTY_LOGGERS` once per process (cheap after the first call).

    Only filters are added: no logger's level, handlers or propagation changes."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        for name in THIRD_PARTY_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _OwnCallFilter) for f in logger.filters):
                logger.addFilter(_OwnCallFilter(logger))
        _installed = True


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without the ``secrets`` and without credentials recognisable by their shape."""
    for needle, replacement in _needles(secrets):
        text = text.replace(needle, replacement)
    text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _AUTH_SCHEME.sub(rf"\1\2{REDACTED}", text)
    return _KEYED.sub(rf"\1{REDACTED}", text)


class _OwnCallFilter(logging.Filter):
    """Demotes and redacts the records made inside :func:`own_http`; passes every other record untouched."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _own.get()
        if secrets is None:
            return True  # the app's own call: exactly as before
        try:
            if logging.DEBUG < record.levelno < logging.WARNING:
                record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
                if not self._logger.isEnabledFor(logging.DEBUG):
                    return False
            record.msg, record.args = redact(record.getMessage(), secrets), ()
            if record.exc_info and record.exc_info[1] is not None:
                text = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                clean = redact(text, secrets)
                if clean != text:  # the formatted text goes out instead of the exception object that holds it
                    record.exc_info, record.exc_text = None, clean
            elif record.exc_text:
                record.exc_text = redact(record.exc_text, secrets)
            if record.stack_info:
                record.stack_info = redact(record.stack_info, secrets)
            return True
        except Exception:  # a record we could not clean is dropped, never raised or leaked
            return False


@functools.lru_cache(maxsize=256)
def _needles(secrets: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``(text, replacement)`` pairs for ``secrets``, longest first; a URL's secret is its path and query
    (as written, as httpx percent-encodes it, and decoded) and its password, never its host."""
    pairs: dict[str, str] = {}
    for secret in secrets:
        if "://" not in secret:
            pairs[secret] = REDACTED
            continue
        for tail in _url_tails(secret):
            pairs[tail] = "/" + REDACTED if tail.startswith("/") else REDACTED
    return tuple(sorted(((k, v) for k, v in pairs.items() if len(k) >= MIN_SECRET_CHARS), key=lambda kv: -len(kv[0])))


def _url_tails(url: str) -> set[str]:
    tails: set[str] = set()
    rest = url.split("://", 1)[1]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    tails.add(rest[cut:])
    try:
        parts = urlsplit(url)
        if parts.password:
            tails.add(parts.password)
            tails.add(unquote(parts.password))
        import httpx  # the form httpx/httpx2 log (percent-encoded, normalised)

        encoded = httpx.URL(url)
        tails.add(encoded.raw_path.decode("ascii", "replace"))
        if encoded.fragment:
            tails.add(encoded.fragment)
    except Exception:  # an unparsable URL still has its written tail redacted
        pass
    tails |= {unquote(t) for t in tails}
    return {t for t in tails if t not in ("", "/")}
