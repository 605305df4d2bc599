"""What judging costs, per tier, and the hourly budget that stops audits first, then heavy calls."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TierSpend:
    calls: int = 0
    usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CostTracker:
    """Totals per tier and a sliding one-hour window of spend.

    Thread-safe; the lock guards only arithmetic, never I/O. One tracker may be
    shared by several evaluators so they draw on one budget.
    """

    WINDOW_S = 3600.0
    #: Audits stop once this share of the hourly budget is spent, so what is left goes to the cascade itself:
    #: the budget stops audits before it stops anything else.
    AUDIT_SHARE = 0.8

    def __init__(self, *, budget_usd_per_hour: float | None = None) -> None:
        if budget_usd_per_hour is not None:
            _check_budget(budget_usd_per_hour)
        self._budget = budget_usd_per_hour
        self._lock = threading.Lock()
        self._totals: dict[str, TierSpend] = {}
        self._window: deque[tuple[float, float]] = deque()
        self._window_usd = 0.0

    @property
    def budget_usd_per_hour(self) -> float | None:
        return self._budget

    @budget_usd_per_hour.setter
    def budget_usd_per_hour(self, value: float | None) -> None:
        if value is not None:
            _check_budget(value)
        self._budget = value

    def record(self, tier: str, *, usd: float, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        now = time.monotonic()
        with self._lock:
            old = self._totals.get(tier, TierSpend())
            self._totals[tier] = TierSpend(
                old.calls + 1,
                old.usd + usd,
                old.prompt_tokens + prompt_tokens,
                old.completion_tokens + completion_tokens,
            )
            if usd:
                self._window.append((now, usd))
                self._window_usd += usd
            self._expire(now)

    def spent_last_hour(self) -> float:
        with self._lock:
            self._expire(time.monotonic())
            return max(self._window_usd, 0.0)

    def budget_left(self) -> float | None:
        """USD left in the current hour, or ``None`` without a budget."""
        if self._budget is None:
            return None
        return max(self._budget - self.spent_last_hour(), 0.0)

    def exhausted(self) -> bool:
        left = self.budget_left()
        return left is not None and left <= 0.0

    def admits_audit(self) -> bool:
        """Whether an audit may start: without a budget always; with one, while less than :attr:`AUDIT_SHARE`
        of it is spent this hour."""
        if self._budget is None:
            return True
        return self.spent_last_hour() < self._budget * self.AUDIT_SHARE

    def totals(self) -> dict[str, TierSpend]:
        with self._lock:
            return dict(self._totals)

    @property
    def total_usd(self) -> float:
        with self._lock:
            return sum(t.usd for t in self._totals.values())

    def _expire(self, now: float) -> None:
        horizon = now - self.WINDOW_S
        while self._window and self._window[0][0] <= horizon:
            self._window_usd -= self._window.popleft()[1]

    def __repr__(self) -> str:
        return f"CostTracker(budget_usd_per_hour={self._budget}, total_usd={self.total_usd:.6f})"


def _check_budget(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"budget_usd_per_hour must be a number or None, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"budget_usd_per_hour must be finite and >= 0, got {value!r}")
