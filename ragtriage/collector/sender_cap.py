"""A cap per sender on the sampled traces judged a minute, so one noisy or hostile sender cannot spend
the judge budget of the others. Traces over the cap are still forwarded; they are counted, not judged."""

from __future__ import annotations


class SenderCap:
    """A token bucket per sender: ``per_minute`` traces, refilled continuously; ``None``: no cap.

    Senders are the configured tokens (plus the anonymous one), so the table is bounded."""

    def __init__(self, per_minute: int | None) -> None:
        if per_minute is not None and (type(per_minute) is not int or per_minute < 1):
            raise ValueError(f"per_minute must be a positive int or None, got {per_minute!r}")
        self._cap = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}  # sender -> (tokens left, when)

    def admit(self, sender: str, now: float) -> bool:
        """Take one trace of ``sender``'s allowance at ``now`` (monotonic seconds); ``False`` when spent."""
        if self._cap is None:
            return True
        left, then = self._buckets.get(sender, (float(self._cap), now))
        left = min(float(self._cap), left + (now - then) * self._cap / 60.0)
        if left < 1.0:
            self._buckets[sender] = (left, now)
            return False
        self._buckets[sender] = (left - 1.0, now)
        return True
