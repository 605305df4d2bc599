"""Intervals for rates, their differences and agreement: judge drift moves absolutes, so gates compare with CIs.

At the bottom of the import graph: the release gate, the audit windows and the reports share it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 1) when n is 0 (nothing known)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(s1: int, n1: int, s2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (independent samples, method 10)."""
    p1, p2 = (s1 / n1 if n1 else 0.0), (s2 / n2 if n2 else 0.0)
    l1, u1 = wilson(s1, n1, z)
    l2, u2 = wilson(s2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, low), min(1.0, high))


def bootstrap_mean_diff(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of mean(a) - mean(b); None when either side is empty."""
    if not a or not b:
        return None
    rng = random.Random(seed)
    diffs = sorted(
        sum(rng.choices(a, k=len(a))) / len(a) - sum(rng.choices(b, k=len(b))) / len(b) for _ in range(resamples)
    )
    return (diffs[int(0.025 * resamples)], diffs[min(resamples - 1, int(0.975 * resamples))])


def cohen_kappa(table: Sequence[Sequence[int]], z: float = Z95) -> tuple[float | None, tuple[float, float] | None]:
    """Cohen's kappa of a square agreement table (rows: one rater, columns: the other) and its 95% interval.

    The interval is the large-sample one (Fleiss, Cohen & Everitt 1969, the standard error of kappa under
    the observed margins, simplified form): fine from a few dozen items, ``None`` below 2 items or when
    chance agreement is 1 (every item in one class: kappa is undefined, not 0 or 1).
    """
    n = sum(sum(row) for row in table)
    if n < 2:
        return None, None
    k = len(table)
    po = sum(table[i][i] for i in range(k)) / n
    rows = [sum(table[i]) / n for i in range(k)]
    cols = [sum(table[i][j] for i in range(k)) / n for j in range(k)]
    pe = sum(r * c for r, c in zip(rows, cols, strict=True))
    if pe >= 1:
        return None, None
    kappa = (po - pe) / (1 - pe)
    se = math.sqrt(max(po * (1 - po), 0.0) / (n * (1 - pe) ** 2))
    return kappa, (max(-1.0, kappa - z * se), min(1.0, kappa + z * se))


Prediction = Literal["hallucinated", "faithful", "undecided"]
PREDICTIONS: tuple[Prediction, ...] = ("hallucinated", "faithful", "undecided")


@dataclass(frozen=True, slots=True)
class TierStats:
    """Confusion counts ``confusion[label][prediction]`` of a judge (a tier, a metric) against reference labels
    (people's), and the rates built from them. The positive class is ``hallucinated`` (a ``fail``); an
    ``undecided`` prediction counts against recall but not in accuracy or kappa. Intervals are 95%."""

    tier: str
    confusion: dict[str, dict[str, int]]

    def _c(self, label: str, pred: str) -> int:
        return self.confusion[label][pred]

    @property
    def n(self) -> int:
        return sum(sum(row.values()) for row in self.confusion.values())

    @property
    def decided(self) -> int:
        return self.n - self._c("hallucinated", "undecided") - self._c("faithful", "undecided")

    def metrics(self) -> dict[str, Any]:
        tp, fn = self._c("hallucinated", "hallucinated"), self._c("hallucinated", "faithful")
        fp, tn = self._c("faithful", "hallucinated"), self._c("faithful", "faithful")
        positives = tp + fn + self._c("hallucinated", "undecided")
        d = tp + fn + fp + tn
        kappa, kappa_interval = cohen_kappa([[tp, fn], [fp, tn]])
        return {
            "n": self.n,
            "decided": d,
            "coverage": round(d / self.n, 4) if self.n else None,
            "accuracy": round((tp + tn) / d, 4) if d else None,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "precision_interval": _rounded(wilson(tp, tp + fp)) if tp + fp else None,
            "recall": round(tp / positives, 4) if positives else None,
            "recall_interval": _rounded(wilson(tp, positives)) if positives else None,
            "kappa": round(kappa, 4) if kappa is not None else None,
            "kappa_interval": _rounded(kappa_interval) if kappa_interval is not None else None,
        }


def empty_confusion() -> dict[str, dict[str, int]]:
    """``confusion[label][prediction]``, all zero, for :class:`TierStats`."""
    return {label: dict.fromkeys(PREDICTIONS, 0) for label in ("hallucinated", "faithful")}


def _rounded(interval: tuple[float, float]) -> list[float]:
    return [round(interval[0], 4), round(interval[1], 4)]
