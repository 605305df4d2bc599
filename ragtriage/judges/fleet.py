"""Several servers behind one judge: which one a sample goes to, and which are out for a while.

Each sample has a fixed preference order over the servers, from rendezvous hashing (highest
random weight) of its content: the same input always goes first to the same server, so repeated
and similar calls land on that server's prefix cache, and adding or removing a server moves only
the samples that preferred it. When a server fails, the sample goes to the next one in its
order; a dead server's samples spread evenly over the rest (a ring would double its neighbour's
load).

A server that cannot be reached or times out is taken out for a back-off (1 s, doubling with each
consecutive failure, at most 30 s) and then tried again by the next call that prefers it. An HTTP
error reply does not take a server out (it answered: busy, not dead). When every server is out,
a new call fails at once: ``judge_error``, never a wait.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ragtriage._log_hygiene import redact
from ragtriage.judges._transport import Origin

BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


@dataclass(eq=False)
class Server:
    """One judge endpoint: its address, its health, what it was asked and how often it failed."""

    url: str = field(repr=False)  # may carry a password: shown as name
    origin: Origin = field(repr=False)
    calls: int = 0
    errors: int = 0
    failures_in_a_row: int = 0
    down_until: float = 0.0
    _seed: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        return f"Server({self.name!r}, calls={self.calls}, errors={self.errors}, down_until={self.down_until})"

    @property
    def name(self) -> str:
        """The URL without any password it carries: what metrics and messages show."""
        return redact(self.url)

    def available(self, now: float) -> bool:
        return now >= self.down_until

    def succeeded(self) -> None:
        self.calls += 1
        self.failures_in_a_row = 0
        self.down_until = 0.0

    def failed(self, *, take_out: bool) -> None:
        self.calls += 1
        self.errors += 1
        now = time.monotonic()
        if take_out and self.available(now):  # calls that were in flight when it died do not lengthen the back-off
            backoff = min(BACKOFF_S * 2**self.failures_in_a_row, MAX_BACKOFF_S)
            self.failures_in_a_row += 1
            self.down_until = now + backoff


class Fleet:
    """The servers of one judge, in a per-sample preference order."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("base_url must name at least one server")
        if len(set(urls)) != len(urls):
            raise ValueError(f"base_url names a server twice: {[redact(u) for u in urls]}")
        self.servers = [Server(u, Origin.parse(u), _seed=u.encode()) for u in urls]

    def order(self, question: str, answer: str, contexts: Sequence[str]) -> list[Server]:
        """Every server, the sample's preferred one first (one server: no hashing at all)."""
        if len(self.servers) == 1:
            return self.servers
        digest = hashlib.blake2b(question.encode(), digest_size=16)
        for text in (answer, *contexts):
            digest.update(b"\x00")
            digest.update(text.encode())
        key = digest.digest()
        return sorted(
            self.servers, key=lambda s: hashlib.blake2b(s._seed, key=key, digest_size=8).digest(), reverse=True
        )
