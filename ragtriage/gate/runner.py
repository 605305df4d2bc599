"""The release gate behind ``ragtriage ci``: stratified sample, bounded run under budget and time, gates.

An item the judges did not decide (``uncertain``, a judge error) is "not decided": it never counts as a
pass, and an item the run never reached is listed as not evaluated, with why.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtriage.evaluator import RAGEvaluator
from ragtriage.gate.budget import BudgetGuard
from ragtriage.gate.datasets import Item
from ragtriage.gate.synth import synthesize
from ragtriage.stats import bootstrap_mean_diff, newcombe, wilson

#: Rates compared with a baseline: name -> (numerator key, denominator key) in :func:`counts`.
RATES: dict[str, tuple[str, str]] = {
    "pass_rate": ("passed", "evaluated"),
    "detection": ("caught", "hallucinated"),
    "agreement": ("correct", "decided"),
}


# -- sampling -------------------------------------------------------------------------------------------


def _allocate(sizes: dict[Any, int], k: int) -> dict[Any, int]:
    """Split ``k`` over groups proportionally (largest remainder), every group at least one when k allows."""
    take = dict.fromkeys(sizes, 0)
    k = min(k, sum(sizes.values()))
    if k >= len(sizes):
        take = {g: 1 for g in sizes if sizes[g]}
    while sum(take.values()) < k:
        room = {g: sizes[g] - take[g] for g in sizes if sizes[g] > take[g]}
        left = k - sum(take.values())
        total = sum(room.values())
        shares = {g: left * r / total for g, r in room.items()}
        extra = {g: min(room[g], int(s)) for g, s in shares.items()}
        if not any(extra.values()):  # hand out the remainders one by one, largest first
            for g in sorted(room, key=lambda g: (-(shares[g] - int(shares[g])), str(g)))[:left]:
                extra[g] = 1
        for g, e in extra.items():
            take[g] += e
    return take


def _equal(sizes: dict[Any, int], k: int, rng: random.Random) -> dict[Any, int]:
    """Split ``k`` as evenly as the groups allow (round robin in a seeded order)."""
    take = dict.fromkeys(sizes, 0)
    order = sorted(sizes, key=str)
    rng.shuffle(order)
    while sum(take.values()) < min(k, sum(sizes.values())):
        for g in order:
            if take[g] < sizes[g] and sum(take.values()) < k:
                take[g] += 1
    return take


def _stratified(
    items: Sequence[Item], k: int, keys: Sequence[Callable[[Item], Any]], rng: random.Random, *, equal: bool = False
) -> list[Item]:
    """Allocate ``k`` over the groups of ``keys[0]``, then within each group over ``keys[1:]``."""
    if not keys:
        return rng.sample(list(items), min(k, len(items)))
    groups: dict[Any, list[Item]] = defaultdict(list)
    for item in items:
        groups[keys[0](item)].append(item)
    sizes = {g: len(v) for g, v in groups.items()}
    take = _equal(sizes, k, rng) if equal else _allocate(sizes, k)
    chosen: list[Item] = []
    for g in sorted(groups, key=str):
        chosen += _stratified(groups[g], take[g], keys[1:], rng)
    return chosen


def stratified_sample(
    items: Sequence[Item], n: int, *, adversarial_share: float = 0.0, seed: int = 0
) -> tuple[list[Item], list[str]]:
    """``n`` items: originals stratified by category, then label within it; adversarial ones spread evenly over kinds.

    Without perturbed rows in ``items``, the adversarial part is synthesized from the originals. Returns the
    sample and notes on any shortfall (a pool smaller than asked for).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= adversarial_share <= 1.0:
        raise ValueError(f"adversarial_share must be in [0, 1], got {adversarial_share}")
    rng = random.Random(seed)
    originals = [i for i in items if not i.adversarial]
    adversarial = [i for i in items if i.adversarial]
    if adversarial_share > 0 and not adversarial:
        adversarial = synthesize(originals, seed=seed).items
    want_adv = round(n * adversarial_share)
    notes = []
    chosen_adv = _stratified(adversarial, want_adv, [lambda i: i.perturbation], rng, equal=True)
    want_orig = n - len(chosen_adv)
    chosen = _stratified(originals, want_orig, [lambda i: i.category, lambda i: i.label], rng)
    if len(chosen_adv) < want_adv:
        notes.append(f"only {len(chosen_adv)} adversarial items available of {want_adv} asked for")
    if len(chosen) + len(chosen_adv) < n:
        notes.append(f"the dataset holds {len(chosen) + len(chosen_adv)} usable items, fewer than n={n}")
    sample = chosen + chosen_adv
    rng.shuffle(sample)
    return sample, notes


# -- running --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One planned item: its verdict, or why it was not evaluated."""

    item: Item
    evaluated: bool
    verdict: str | None = None  # pass | fail | uncertain
    tier: str | None = None
    status: str | None = None
    #: A judge's faithfulness (``RAGEvaluationResult.scores``): what the baseline's mean is compared on.
    faithfulness: float | None = None
    cost_usd: float = 0.0
    error: str | None = None
    skipped_because: str | None = None

    @property
    def decided(self) -> bool:
        return self.evaluated and self.verdict in ("pass", "fail")

    @property
    def correct(self) -> bool:
        return self.decided and self.verdict == self.item.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.item.id,
            "category": self.item.category,
            "label": self.item.label,
            "perturbation": self.item.perturbation,
            "expected": self.item.expected,
            "evaluated": self.evaluated,
            "verdict": self.verdict,
            "tier": self.tier,
            "status": self.status,
            "faithfulness": self.faithfulness,
            "cost_usd": self.cost_usd,
            "error": self.error,
            "skipped_because": self.skipped_because,
        }


@dataclass
class RunReport:
    """Every planned item's outcome, why the run stopped (if early), what it spent."""

    outcomes: list[Outcome]
    stopped: str | None = None
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def evaluated(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.evaluated]

    @property
    def not_evaluated(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.evaluated]


async def run_gate(
    evaluator: RAGEvaluator,
    items: Sequence[Item],
    *,
    budget_usd: float | None = None,
    time_limit_s: float | None = None,
    concurrency: int = 4,
    on_done: Callable[[Outcome], None] | None = None,
) -> RunReport:
    """Evaluate ``items`` with at most ``concurrency`` in flight.

    An item starts only while the spend so far plus the in-flight items at the costliest price seen stays
    within ``budget_usd``; at ``time_limit_s`` in-flight evaluations are cancelled. Either way the report
    lists every item that was not evaluated and why.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    started = time.perf_counter()
    done: dict[str, Outcome] = {}
    cancelled: set[str] = set()
    budget = BudgetGuard(budget_usd)
    state: dict[str, Any] = {"stopped": None}
    pending = iter(items)

    def record(outcome: Outcome) -> None:
        done[outcome.item.id] = outcome
        if on_done is not None:
            on_done(outcome)

    async def worker() -> None:
        for item in pending:
            if state["stopped"]:
                return
            if not budget.admits():
                state["stopped"] = "budget"
                return
            try:
                with budget.call():
                    result = await evaluator.evaluate(item.question, item.answer, item.contexts, sample_key=item.id)
            except asyncio.CancelledError:
                cancelled.add(item.id)
                raise
            except Exception as exc:  # an evaluator bug must not end the run unreported
                record(Outcome(item, True, "uncertain", status="error", error=f"{type(exc).__name__}: {exc}"))
                continue
            budget.spend(result.eval_cost_usd)
            record(
                Outcome(
                    item,
                    True,
                    result.verdict,
                    result.tier,
                    result.status,
                    result.scores(("faithfulness",)).get("faithfulness"),  # a judge's: the free tiers' only fail
                    result.eval_cost_usd,
                    result.error,
                )
            )

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    _, unfinished = await asyncio.wait(workers, timeout=time_limit_s)
    if unfinished:
        state["stopped"] = "time limit"
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
    outcomes = []
    for item in items:
        if item.id in done:
            outcomes.append(done[item.id])
        else:
            why = state["stopped"] or "not reached"
            if item.id in cancelled:
                why += " (was in flight, cancelled)"
            outcomes.append(Outcome(item, False, skipped_because=why))
    return RunReport(outcomes, state["stopped"], round(budget.spent_usd, 8), round(time.perf_counter() - started, 3))


# -- metrics and gates ----------------------------------------------------------------------------------


def counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """The counts every rate is built from (only evaluated items count)."""
    ev = [o for o in outcomes if o.evaluated]
    return {
        "planned": len(outcomes),
        "evaluated": len(ev),
        "decided": sum(o.decided for o in ev),
        "not_decided": sum(not o.decided for o in ev),
        "judge_errors": sum(o.status in ("judge_error", "error") for o in ev),
        "passed": sum(o.verdict == "pass" for o in ev),
        "failed": sum(o.verdict == "fail" for o in ev),
        "correct": sum(o.correct for o in ev),
        "hallucinated": sum(o.item.is_hallucination for o in ev),
        "caught": sum(o.item.is_hallucination and o.verdict == "fail" for o in ev),
        "false_fails": sum(not o.item.is_hallucination and o.verdict == "fail" for o in ev),
    }


def rate(c: dict[str, int], name: str) -> tuple[float | None, tuple[float, float], int]:
    """(value, Wilson 95% CI, denominator) of one of :data:`RATES`."""
    num, den = RATES[name]
    n = c[den]
    return (c[num] / n if n else None, wilson(c[num], n), n)


@dataclass(frozen=True, slots=True)
class GateConfig:
    """What fails the gate. Rates are shares of evaluated items; "not decided" never counts as a pass, and a run
    that decided no item at all fails."""

    min_pass_rate: float | None = None
    min_detection: float | None = None
    min_agreement: float | None = None
    max_not_decided: float | None = None
    max_judge_errors: int = 0
    allow_partial: bool = False
    max_drop: float = 0.05


@dataclass(frozen=True, slots=True)
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Delta:
    """Current minus baseline for one rate, with Newcombe's 95% CI."""

    metric: str
    current: float | None
    baseline: float | None
    delta: float | None
    ci: tuple[float, float] | None
    regression: bool


def compare(current: dict[str, int], baseline: dict[str, int], max_drop: float) -> list[Delta]:
    """A regression is a drop of more than ``max_drop`` whose CI lies wholly below zero (not judge noise)."""
    deltas = []
    for name, (num, den) in RATES.items():
        n1, n0 = current[den], baseline.get(den, 0)
        if not n1 or not n0:
            deltas.append(Delta(name, None, None, None, None, False))
            continue
        p1, p0 = current[num] / n1, baseline[num] / n0
        ci = newcombe(current[num], n1, baseline[num], n0)
        deltas.append(Delta(name, p1, p0, p1 - p0, ci, (p1 - p0) < -max_drop and ci[1] < 0))
    return deltas


def evaluate_gates(report: RunReport, config: GateConfig, baseline: dict[str, Any] | None = None) -> list[GateCheck]:
    c = counts(report.outcomes)
    checks = []
    missing = c["planned"] - c["evaluated"]
    checks.append(
        GateCheck(
            "coverage",
            missing == 0 or config.allow_partial,
            f"{c['evaluated']}/{c['planned']} evaluated"
            + (f"; stopped by {report.stopped}" if report.stopped else "")
            + ("; partial runs allowed" if missing and config.allow_partial else ""),
        )
    )
    checks.append(
        GateCheck(
            "judge_errors",
            c["judge_errors"] <= config.max_judge_errors,
            f"{c['judge_errors']} judge error(s), at most {config.max_judge_errors} allowed",
        )
    )
    # A gate that decided nothing has checked nothing: it never passes, whatever else was asked.
    checks.append(
        GateCheck(
            "decided",
            c["decided"] > 0,
            f"{c['decided']} of {c['evaluated']} evaluated items decided"
            + ("" if c["decided"] else ": a gate that decided nothing checked nothing (the free tiers alone only "
               "prove fails: configure an LLM judge)"),
        )
    )  # fmt: skip
    for name, minimum in (
        ("pass_rate", config.min_pass_rate),
        ("detection", config.min_detection),
        ("agreement", config.min_agreement),
    ):
        if minimum is None:
            continue
        value, _, n = rate(c, name)
        ok = value is not None and value >= minimum
        shown = "n/a (no items)" if value is None else f"{value:.1%} of {n}"
        checks.append(GateCheck(name, ok, f"{shown}, minimum {minimum:.1%}"))
    if config.max_not_decided is not None:
        share = c["not_decided"] / c["evaluated"] if c["evaluated"] else 1.0
        checks.append(
            GateCheck(
                "not_decided",
                share <= config.max_not_decided,
                f"{share:.1%} not decided, at most {config.max_not_decided:.1%}",
            )
        )
    if baseline is not None:
        for d in compare(c, baseline["counts"], config.max_drop):
            if d.delta is None:
                checks.append(GateCheck(f"baseline_{d.metric}", True, "no items to compare"))
                continue
            assert d.ci is not None
            checks.append(
                GateCheck(
                    f"baseline_{d.metric}",
                    not d.regression,
                    f"{d.current:.1%} vs {d.baseline:.1%}: {d.delta:+.1%} (95% CI {d.ci[0]:+.1%} to {d.ci[1]:+.1%}),"
                    f" a drop over {config.max_drop:.0%} with the CI below 0 fails",
                )
            )
    return checks


def faithfulness_delta(report: RunReport, baseline: dict[str, Any]) -> tuple[float, tuple[float, float]] | None:
    """Mean faithfulness (items an LLM tier scored) minus the baseline's, with a bootstrap 95% CI."""
    now = [o.faithfulness for o in report.evaluated if o.faithfulness is not None]
    before = [o["faithfulness"] for o in baseline.get("items", []) if o.get("faithfulness") is not None]
    ci = bootstrap_mean_diff(now, before)
    if ci is None:
        return None
    return (sum(now) / len(now) - sum(before) / len(before), ci)


def breakdown(outcomes: Sequence[Outcome], key: Callable[[Outcome], str | None]) -> dict[str, dict[str, int]]:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        k = key(o)
        if k is not None:
            groups[k].append(o)
    return {k: counts(v) for k, v in sorted(groups.items())}


def report_json(report: RunReport, checks: Sequence[GateCheck]) -> dict[str, Any]:
    """The machine-readable report; pass it back as ``--baseline`` next time."""
    return {
        "version": 1,
        "passed": all(c.passed for c in checks),
        "stopped": report.stopped,
        "cost_usd": report.cost_usd,
        "elapsed_s": report.elapsed_s,
        "notes": report.notes,
        "counts": counts(report.outcomes),
        "gates": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks],
        "by_category": breakdown(report.outcomes, lambda o: o.item.category),
        "by_perturbation": breakdown(report.outcomes, lambda o: o.item.perturbation),
        "items": [o.to_dict() for o in report.outcomes],
    }


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A previous ``ci --json`` report."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read baseline report: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("counts"), dict):
        raise ValueError(f"{path}: not a ragtriage ci report (no 'counts'); write one with `ragtriage ci --json`")
    return data
