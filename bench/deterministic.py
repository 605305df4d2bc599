"""The deterministic tier alone, on ~2 KB contexts, on one core (goal: >= 5,000 evaluations/s).

Times ``DeterministicChecker().check(question, answer, contexts)`` over synthetic but realistic
samples (three passages of ~670 characters with names, numbers and dates; grounded, paraphrased,
wrong-number, wrong-name and refusing answers), and for comparison the whole free-tier path,
``RAGEvaluator(sample_rate=1.0, cache=False).evaluate()`` with no judge. The baseline, measured in
the same run, is a trivial pass over the same strings: ``str.lower()`` + ``split()`` of the
question, the answer and every context. Rounds of the three alternate; medians of the rounds are
reported.

    python bench/deterministic.py
    python bench/deterministic.py --samples 600 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import time
from collections import Counter

from _support import Sample, machine, make_samples, percentile

from ragtriage import DeterministicChecker, RAGEvaluator
from ragtriage.judges import deterministic as det_module
from ragtriage.judges import grounding as grounding_module


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


def breakdown(samples: list[Sample]) -> list[tuple[str, float]]:
    """Mean microseconds per sample of the parts of ``check`` (internal names; skipped if they moved)."""
    parts: list[tuple[str, object]] = []
    build = getattr(grounding_module, "EvidenceIndex", None)
    injection = getattr(det_module, "_INJECTION", None)
    looks_injected = getattr(det_module, "_looks_injected", None)  # the prefiltered scan, where it exists
    check_grounding = getattr(grounding_module, "check_grounding", None)
    if build is not None:
        parts.append(("EvidenceIndex.build(contexts)", lambda s: build.build(s.contexts)))
    if looks_injected is not None:
        parts.append(("_looks_injected(contexts)", lambda s: looks_injected(s.contexts)))
    if injection is not None:
        parts.append(("  _INJECTION.search, every context", lambda s: [injection.search(c) for c in s.contexts]))
    if build is not None and check_grounding is not None:
        pre = {id(s): (build.build(s.contexts), build.build((s.question,))) for s in samples}
        parts.append(("EvidenceIndex.build(question)", lambda s: build.build((s.question,))))
        parts.append(("check_grounding(answer)", lambda s: check_grounding(s.answer.strip(), *pre[id(s)])))
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

    base_s, check_s, eval_s = [], [], []
    check_us: list[float] = []
    eval_us: list[float] = []
    for _ in range(rounds):
        base_s.append(min(baseline_round(samples) for _ in range(3)))
        check_s.append(checker_round(checker, samples, check_us))
        eval_s.append(await evaluator_round(evaluator, samples, eval_us))

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
    print(f"ratio check / baseline time        : {base_rate / check_rate:8.1f}x slower than lower()+split()")
    print(f"ratio evaluate / check time        : {check_rate / eval_rate:8.2f}x")
    check_mean_us = statistics.median(check_s) / n * 1e6
    print(f"where check's time goes (best of 3, mean per sample; check itself {check_mean_us:.0f} us):")
    for name, us in breakdown(samples):
        print(f"  {name:34s}: {us:7.1f} us  ({us / check_mean_us:5.1%})")
    words = getattr(det_module, "_INJECTION_WORDS", None)
    if words is not None:
        contexts = [c.lower() for s in samples for c in s.contexts]
        hits = Counter(w for c in contexts for w in words if w in c)
        passing = sum(1 for c in contexts if any(w in c for w in words))
        print(
            f"  injection prefilter lets {passing}/{len(contexts)} contexts ({passing / len(contexts):.0%}) "
            f"through to the regex; words that matched: {dict(hits.most_common())}"
        )
    print(f"goal check >= 5,000/s on one core  : {'met' if check_rate >= 5000 else 'NOT met'} ({check_rate:,.0f}/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed one)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))})
    asyncio.run(main(args.samples, args.rounds))
