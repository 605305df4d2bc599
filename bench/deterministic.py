"""The deterministic tier on ~2 KB contexts, on one core (goal: >= 5,000 evaluate() calls/s, check <= 6x baseline).

Times ``DeterministicChecker().check(question, answer, contexts)`` over synthetic but realistic
samples (three passages of ~670 characters with names, numbers and dates; grounded, paraphrased,
wrong-number, wrong-name and refusing answers), and for comparison the whole free-tier path,
``RAGEvaluator(sample_rate=1.0, cache=False).evaluate()`` with no judge. The baseline, measured in
the same run, is a trivial pass over the same strings: ``str.lower()`` + ``split()`` of the
question, the answer and every context. Rounds alternate; rates are medians of the rounds, and
ratios are medians of each round's time over the same round's baseline.

    python bench/deterministic.py
    python bench/deterministic.py --samples 600 --rounds 5
    python bench/deterministic.py --against /tmp/old   # a checkout of an earlier commit (git worktree add)

``--against TREE`` compares two versions in one run: this bench and TREE's own ``bench/deterministic.py``
run alternately in subprocesses (each with its own code on PYTHONPATH, pinned to the same CPU), and the
medians and the best of their "check / baseline" ratios are compared: the speed goal of #22 is within 10%
of before.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from _support import Sample, machine, make_samples, percentile

from ragtriage import DeterministicChecker, RAGEvaluator
from ragtriage.checks import _contradictions as contradictions
from ragtriage.checks import deterministic as det_module
from ragtriage.checks import grounding as grounding_module
from ragtriage.checks.deterministic import DeterministicReport
from ragtriage.checks.grounding import GroundingReport


def baseline_round(samples: list[Sample]) -> float:
    started = time.perf_counter()
    for s in samples:
        s.question.lower().split()
        s.answer.lower().split()
        for c in s.contexts:
            c.lower().split()
    return time.perf_counter() - started


def checker_round(checker: DeterministicChecker, samples: list[Sample], per_call_us: list[float]) -> float:
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for s in samples:
        t0 = clock()
        checker.check(s.question, s.answer, s.contexts)
        per_call_us.append((clock() - t0) / 1000)
    return time.perf_counter() - started


async def evaluator_round(evaluator: RAGEvaluator, samples: list[Sample], per_call_us: list[float]) -> float:
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for s in samples:
        t0 = clock()
        await evaluator.evaluate(s.question, s.answer, s.contexts)
        per_call_us.append((clock() - t0) / 1000)
    return time.perf_counter() - started


class NullChecker(DeterministicChecker):
    """Decides nothing and costs nothing: ``evaluate()`` through it is the evaluator's own floor."""

    def check(
        self, question: str, answer: str, contexts: Sequence[str], history: Sequence[Mapping[str, str]] = ()
    ) -> DeterministicReport:
        return DeterministicReport((), GroundingReport(1, (), (), ()))


def breakdown(samples: list[Sample]) -> list[tuple[str, float]]:
    """Mean microseconds per sample of the parts of ``check`` (internal names; skipped if they moved)."""
    parts: list[tuple[str, object]] = []
    index = getattr(grounding_module, "EvidenceIndex", None)
    looks_injected = getattr(det_module, "_looks_injected", None)
    check_grounding = getattr(grounding_module, "check_grounding", None)
    if index is None:
        return []
    built = {id(s): (index.build(s.contexts), index.build((s.question,))) for s in samples}
    parts.append(("EvidenceIndex.build(contexts)", lambda s: index.build(s.contexts)))
    parts.append(("EvidenceIndex.build(question)", lambda s: index.build((s.question,))))
    if looks_injected is not None:
        parts.append(("_looks_injected(lowered contexts)", lambda s: looks_injected(built[id(s)][0].lowered)))
    if check_grounding is not None:
        parts.append(("check_grounding(answer)", lambda s: check_grounding(s.answer.strip(), *built[id(s)])))
    wrong_choice = getattr(contradictions, "wrong_choice", None)
    negation_flip = getattr(contradictions, "negation_flip", None)
    if wrong_choice is not None and negation_flip is not None:
        parts.append(
            (
                "contradictions (choice, negation)",
                lambda s: (
                    wrong_choice(s.question, s.answer, built[id(s)][0].text)
                    or negation_flip(s.answer.lower(), built[id(s)][0])
                ),
            )
        )
    out = []
    for name, fn in parts:
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            for s in samples:
                fn(s)
            best = min(best, time.perf_counter() - started)
        out.append((name, best / len(samples) * 1e6))
    return out


async def main(n_samples: int, rounds: int) -> None:
    samples = make_samples(n_samples)
    checker = DeterministicChecker()
    evaluator = RAGEvaluator(sample_rate=1.0, cache=False)
    floor = RAGEvaluator(sample_rate=1.0, cache=False, deterministic=NullChecker())
    chars = statistics.mean(sum(len(c) for c in s.contexts) for s in samples)
    decided = Counter(
        (s.kind, "fail" if checker.check(s.question, s.answer, s.contexts).decided_fail else "undecided")
        for s in samples
    )
    print(machine(), f"pinned to CPU {sorted(os.sched_getaffinity(0))}")
    print(f"samples: {len(samples)}, mean context characters {chars:.0f}, rounds: {rounds}")
    print("checker outcome by answer kind:", dict(sorted(decided.items())))

    # warm-up: regex caches, the evaluator's lazy paths
    baseline_round(samples)
    checker_round(checker, samples, [])
    await evaluator_round(evaluator, samples[:50], [])
    await evaluator_round(floor, samples[:50], [])

    base_s, check_s, eval_s, floor_s = [], [], [], []
    check_us: list[float] = []
    eval_us: list[float] = []
    for _ in range(rounds):
        base_s.append(min(baseline_round(samples) for _ in range(3)))
        check_s.append(checker_round(checker, samples, check_us))
        eval_s.append(await evaluator_round(evaluator, samples, eval_us))
        floor_s.append(await evaluator_round(floor, samples, []))

    n = len(samples)
    base_rate = n / statistics.median(base_s)
    check_rate = n / statistics.median(check_s)
    eval_rate = n / statistics.median(eval_s)
    spread = lambda xs: f"(rounds {n / max(xs):,.0f}..{n / min(xs):,.0f}/s)"  # noqa: E731
    print(f"baseline lower()+split()           : {base_rate:12,.0f} samples/s {spread(base_s)}")
    print(f"DeterministicChecker.check         : {check_rate:12,.0f} evals/s   {spread(check_s)}")
    print(
        f"  per call: p50 {percentile(check_us, 50):.1f} us, p99 {percentile(check_us, 99):.1f} us (n={len(check_us)})"
    )
    print(f"RAGEvaluator.evaluate (no judges)  : {eval_rate:12,.0f} evals/s   {spread(eval_s)}")
    print(f"  per call: p50 {percentile(eval_us, 50):.1f} us, p99 {percentile(eval_us, 99):.1f} us (n={len(eval_us)})")
    floor_rate = n / statistics.median(floor_s)
    print(f"RAGEvaluator.evaluate, null checker: {floor_rate:12,.0f} evals/s   {spread(floor_s)} (evaluator only)")

    def paired(xs: list[float]) -> str:  # each round against the same round's baseline: drift cancels
        ratios = sorted(x / b for x, b in zip(xs, base_s, strict=True))
        return f"{statistics.median(ratios):8.1f}x (rounds {ratios[0]:.1f}..{ratios[-1]:.1f})"

    print(f"ratio check / baseline time        : {paired(check_s)} vs lower()+split() (goal <= 6x)")
    print(f"ratio evaluate / baseline time     : {paired(eval_s)}")
    print(f"ratio null-checker evaluate / base : {paired(floor_s)} (evaluate() with no checks)")
    print(f"ratio evaluate / check time        : {check_rate / eval_rate:8.2f}x")
    check_mean_us = statistics.median(check_s) / n * 1e6
    print(f"where check's time goes (best of 3, mean per sample; check itself {check_mean_us:.0f} us):")
    for name, us in breakdown(samples):
        print(f"  {name:34s}: {us:7.1f} us  ({us / check_mean_us:5.1%})")
    print(f"goal evaluate >= 5,000/s, one core : {'met' if eval_rate >= 5000 else 'NOT met'} ({eval_rate:,.0f}/s)")


def against(tree: str, runs: int, samples: int, rounds: int, cpu: int) -> None:
    """This version against TREE's, alternately in subprocesses: the ratio of their check/baseline ratios."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ratios: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(runs):
        for name, root in (("before", tree), ("now", here)):
            args = ["--samples", str(samples), "--rounds", str(rounds), "--cpu", str(cpu)]
            out = subprocess.run(
                [sys.executable, os.path.join(root, "bench", "deterministic.py"), *args],
                env={**os.environ, "PYTHONPATH": root},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found = re.search(r"ratio check / baseline time\s*:\s*([\d.]+)x", out)
            assert found, out
            ratios[name].append(float(found.group(1)))
    for how, pick in (("median", statistics.median), ("best", min)):  # best: the runs other load disturbed least
        before, now = pick(ratios["before"]), pick(ratios["now"])
        print(f"check / baseline, {how} of {runs} alternating runs: before {before:.2f}x, now {now:.2f}x; ", end="")
        print(f"now / before {now / before:.3f} (goal of #22: <= 1.10)")
    print(f"  before {ratios['before']}\n  now    {ratios['now']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed one)")
    parser.add_argument("--against", metavar="TREE", help="compare with the code of this checkout, same run")
    parser.add_argument("--runs", type=int, default=4, help="with --against: alternating runs of each version")
    args = parser.parse_args()
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    if args.against:
        against(args.against, args.runs, args.samples, args.rounds, cpu)
    else:
        os.sched_setaffinity(0, {cpu})
        asyncio.run(main(args.samples, args.rounds))
