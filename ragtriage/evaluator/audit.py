"""Audit samples: a share of what a cheaper tier decided, judged again by the tier above it.

The cascade's promise is that cheap tiers decide most answers; nothing else measures, in production, whether
they still decide them right. A chosen share of the decisions a cheaper tier made (a free-tier ``fail``, a
confident local judge) is judged again by the auditing tier (the heavy judge when there is one, else the local
judge), in the background, after the result was given: the verdict never changes. Each tier's agreement with
its auditor over a window (agreement rate, precision of ``fail``, Wilson intervals) is what the metrics, the
``tier_agreement_low`` alert and the reports read.

Which samples: a hash of the sample key with its own salt, independent of the trace-id sampling (the same
hash would audit every sampled trace or none), and the same in every process, so a redelivered sample is
audited again or not at all.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ragtriage.evaluator.results import RAGEvaluationResult, Tier, Verdict
from ragtriage.stats import wilson

#: The tiers whose decisions are audited: the free tiers' certain ``fail`` and a confident local judge.
AUDITED_TIERS: tuple[Tier, ...] = ("deterministic", "local")
AuditStatus = Literal["ok", "judge_error", "budget_exhausted"]
_SALT = b"ragtriage-audit:"


def audit_chosen(key: str, rate: float) -> bool:
    """Whether the sample with ``key`` is audited at ``rate``: deterministic on the key."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(_SALT + key.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < int(rate * 2**64)


def audited_tier(result: RAGEvaluationResult, *, has_local: bool, has_heavy: bool) -> Literal["local", "heavy"] | None:
    """The tier that audits ``result`` (``"heavy"`` if configured, else ``"local"``), or ``None`` when the
    result is not an auditable decision of a cheaper tier."""
    if not result.sampled or result.status != "ok":
        return None
    if result.tier == "deterministic" and result.verdict == "fail":
        return "heavy" if has_heavy else "local" if has_local else None
    if result.tier == "local" and result.verdict in ("pass", "fail") and has_heavy:
        return "heavy"
    return None


@dataclass(frozen=True, slots=True)
class AuditOutcome:
    """One audit: what the audited tier decided (it stands) and what its auditor says."""

    sample_key: str | None
    tier: Tier
    verdict: Verdict
    auditor: Literal["local", "heavy"]
    audit_verdict: Verdict | None
    status: AuditStatus = "ok"
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    faithfulness: float | None = None
    detail: str = ""

    @property
    def agrees(self) -> bool | None:
        """``None`` when the auditor did not decide (an error, the budget, or ``uncertain``)."""
        if self.audit_verdict is None or self.audit_verdict == "uncertain":
            return None
        return self.audit_verdict == self.verdict


@dataclass(frozen=True, slots=True)
class Agreement:
    """A tier's agreement with its auditor over the window, with 95% Wilson intervals.

    ``agreement``: share of the decided audits whose verdicts match. ``fail_precision``: of the tier's audited
    ``fail`` verdicts, the share the auditor also failed (a free tier that forges fails shows it here first).
    """

    tier: str
    audits: int
    agreed: int
    fails: int
    fails_confirmed: int
    undecided: int

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.audits if self.audits else None

    @property
    def agreement_interval(self) -> tuple[float, float]:
        return wilson(self.agreed, self.audits)

    @property
    def fail_precision(self) -> float | None:
        return self.fails_confirmed / self.fails if self.fails else None

    @property
    def fail_precision_interval(self) -> tuple[float, float]:
        return wilson(self.fails_confirmed, self.fails)

    def to_dict(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "audits": self.audits,
            "agreement": self.agreement,
            "agreement_interval": self.agreement_interval,
            "fails": self.fails,
            "fail_precision": self.fail_precision,
            "fail_precision_interval": self.fail_precision_interval,
            "undecided": self.undecided,
        }


def agreement_of(tier: str, pairs: Iterable[tuple[str, str | None]]) -> Agreement:
    """Agreement of one tier's ``(verdict, auditor's verdict)`` pairs; an auditor's ``None`` or ``uncertain`` is
    counted as undecided, never as agreement (the Phoenix reports call this with annotations' labels)."""
    return agreement_of_counts(tier, Counter(pairs))


def agreement_of_counts(tier: str, counts: Mapping[tuple[str, str | None], int]) -> Agreement:
    """:func:`agreement_of`, from how many times each ``(verdict, auditor's verdict)`` pair occurred (a window
    kept as counts, as in Redis)."""
    decided = {(v, a): n for (v, a), n in counts.items() if a in ("pass", "fail")}
    fails = {(v, a): n for (v, a), n in decided.items() if v == "fail"}
    return Agreement(
        tier=tier,
        audits=sum(decided.values()),
        agreed=sum(n for (v, a), n in decided.items() if v == a),
        fails=sum(fails.values()),
        fails_confirmed=sum(n for (_, a), n in fails.items() if a == "fail"),
        undecided=sum(counts.values()) - sum(decided.values()),
    )


class AgreementWindow:
    """The last ``size`` audits of each tier, none older than ``window_s``; thread-safe, no I/O under the lock."""

    def __init__(self, *, size: int = 1000, window_s: float = 24 * 3600.0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if isinstance(window_s, bool) or not isinstance(window_s, int | float) or window_s <= 0:
            raise ValueError(f"window_s must be a number > 0, got {window_s!r}")
        self.size = size
        self.window_s = float(window_s)
        self._lock = threading.Lock()
        self._audits: dict[str, deque[tuple[float, AuditOutcome]]] = {t: deque(maxlen=size) for t in AUDITED_TIERS}
        #: ``audits_ok``, ``audits_judge_error``, ``audits_budget_exhausted``, ``audits_dropped_busy``, ...
        self.counts: Counter[str] = Counter()
        self.cost_usd = 0.0

    async def record(self, outcome: AuditOutcome) -> None:
        """Add a finished audit (the evaluator's call; a shared window also shares it). Never raises."""
        self.add(outcome)

    def add(self, outcome: AuditOutcome) -> None:
        """Add an audit to this process's window."""
        with self._lock:
            self._audits[outcome.tier].append((time.monotonic(), outcome))
            self.counts[f"audits_{outcome.status}"] += 1
            self.cost_usd += outcome.cost_usd

    def count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def outcomes(self, tier: str) -> list[AuditOutcome]:
        horizon = time.monotonic() - self.window_s
        with self._lock:
            return [o for at, o in self._audits.get(tier, ()) if at > horizon]

    def agreement(self, tier: str) -> Agreement:
        return agreement_of(tier, ((o.verdict, o.audit_verdict) for o in self.outcomes(tier)))

    def snapshot(self) -> dict[str, Agreement]:
        """Every audited tier's agreement now (tiers never audited included, with 0 audits)."""
        return {tier: self.agreement(tier) for tier in AUDITED_TIERS}


__all__ = [
    "AUDITED_TIERS",
    "Agreement",
    "AgreementWindow",
    "AuditOutcome",
    "agreement_of",
    "agreement_of_counts",
    "audit_chosen",
    "audited_tier",
]
