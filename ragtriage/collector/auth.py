"""Who may send to ``ragtriage collect``: bearer tokens, compared in constant time.

A sender presents ``authorization: Bearer <token>`` (an HTTP header over OTLP/HTTP, metadata over
OTLP/gRPC: the OTel SDK exporters' ``headers`` setting or ``OTEL_EXPORTER_OTLP_HEADERS``). The
token is the collector's own, so it is never passed on to the next hop. A sender is known by its
token's position (``sender-1``, ...), never by the token itself, so a count or a log line cannot leak it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

#: The sender of every request when no token is configured.
ANONYMOUS = "anonymous"
#: The header (gRPC metadata key) that carries the token.
AUTHORIZATION = "authorization"


class TokenAuth:
    """Checks ``authorization`` headers against ``tokens``; no tokens: everyone is :data:`ANONYMOUS`."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        tokens = tuple(tokens)
        if not all(isinstance(t, str) and t.strip() for t in tokens):
            raise ValueError("tokens must be non-empty strings")
        self._tokens = tuple(t.strip().encode() for t in dict.fromkeys(tokens))

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def sender(self, authorization: str | None) -> str | None:
        """The sender the header proves (``sender-N``), :data:`ANONYMOUS` without tokens, else ``None``.

        Every token is compared (``hmac.compare_digest``), so the time taken says nothing of which
        token, or how much of one, matched."""
        if not self._tokens:
            return ANONYMOUS
        scheme, _, presented = (authorization or "").strip().partition(" ")
        candidate = presented.strip().encode() if scheme.lower() == "bearer" else b""
        found = None
        for index, token in enumerate(self._tokens, 1):
            if hmac.compare_digest(candidate, token):  # tokens are never empty: b"" matches none
                found = f"sender-{index}"
        return found

    def __repr__(self) -> str:
        return f"TokenAuth(tokens={len(self._tokens)})"


def read_token_file(path: str | Path) -> tuple[str, ...]:
    """One token a line; blank lines and ``#`` comments are skipped. A file with none is an error."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"token file {str(path)!r} cannot be read: {exc.strerror}") from None
    tokens = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not tokens:
        raise ValueError(f"token file {str(path)!r} holds no token")
    return tokens
