"""The budget guard of offline runs (``ragtriage ci``, ``ragtriage calibrate``).

A call starts only while the spend so far, plus every call in flight at the costliest price seen yet,
stays within the budget: so a run never overspends by more than the calls it could not foresee.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class BudgetGuard:
    """Admits calls while they fit in ``budget_usd`` (``None``: no limit); tracks the spend."""

    def __init__(self, budget_usd: float | None) -> None:
        if budget_usd is not None and (isinstance(budget_usd, bool) or not isinstance(budget_usd, int | float)):
            raise TypeError(f"budget_usd must be a number, got {budget_usd!r}")
        if budget_usd is not None and budget_usd < 0:
            raise ValueError(f"budget_usd must be >= 0, got {budget_usd!r}")
        self.budget_usd = budget_usd
        self.spent_usd = 0.0
        self.max_cost_usd = 0.0
        self.in_flight = 0

    def admits(self) -> bool:
        """May one more call start now?"""
        if self.budget_usd is None:
            return True
        return self.spent_usd + (self.in_flight + 1) * self.max_cost_usd <= self.budget_usd

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Count a started call as in flight until it returns (spend it with :meth:`spend`)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def spend(self, cost_usd: float) -> None:
        self.spent_usd += cost_usd
        self.max_cost_usd = max(self.max_cost_usd, cost_usd)
