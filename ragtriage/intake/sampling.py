"""Deterministic sampling: the same key always gets the same decision, in every process."""

from __future__ import annotations

import hashlib

#: The low 64 bits of a trace id, the part ``TraceIdRatioBased`` compares with its bound.
TRACE_ID_MASK = (1 << 64) - 1


def sample_bound(rate: float) -> int:
    """The 64-bit bound below which a key is sampled (``TraceIdRatioBased``'s rule)."""
    return round(rate * (TRACE_ID_MASK + 1))


def key_to_int(key: str | bytes | int) -> int:
    """Map a key to 64 bits: a trace id keeps its low 64 bits, like ``TraceIdRatioBased``;
    text is hashed with BLAKE2b, never Python's per-process salted ``hash``."""
    if isinstance(key, bool):
        raise TypeError("sample key must be str, bytes or int, not bool")
    if isinstance(key, int):
        return key & TRACE_ID_MASK
    if isinstance(key, str):
        key = key.encode("utf-8", "surrogatepass")
    if not isinstance(key, bytes):
        raise TypeError(f"sample key must be str, bytes or int, got {type(key).__name__}")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def is_sampled(key: str | bytes | int, bound: int) -> bool:
    return key_to_int(key) < bound
