"""What conversations cost the evaluating process: session tallies and the history in the cascade.

Per sample, CPU time (``time.process_time``) of the pipeline with free tiers only, measured in one run, paired
and interleaved round by round:

- ``baseline``: ``Pipeline(evaluator)``, samples without history or session (what #25 changes nothing for);
- ``history``: the same samples carrying a six-turn conversation (the free tiers read the user's turns, the
  history is bounded and cleaned);
- ``sessions (memory)``: ``Pipeline(evaluator, sessions=SessionScorer())``, each sample a turn of one of 50
  sessions, tallied in memory;
- ``sessions (redis)``: the same with a ``RedisSessionStore`` on a real loopback redis-server (one Lua call per
  turn).

Ratios are against the baseline of the same round; the median over rounds is printed.

    python bench/sessions.py
    python bench/sessions.py --samples 600 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from _support import RedisProcess, machine, make_samples

from ragtriage import RAGEvaluator
from ragtriage.pipeline import Pipeline
from ragtriage.sample import Document, RAGSample
from ragtriage.sessions import RedisSessionStore, SessionScorer

HISTORY = [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"Earlier turn {i} about the team and the product."}
    for i in range(6)
]


def samples(n: int, *, history: bool, sessions: bool) -> list[RAGSample]:
    return [
        RAGSample(
            i + 1,
            i + 1,
            s.question,
            s.answer,
            [Document(c, position=j) for j, c in enumerate(s.contexts)],
            history=list(HISTORY) if history else [],
            session_id=f"chat-{i % 50}" if sessions else None,
        )
        for i, s in enumerate(make_samples(n))
    ]


async def cpu_per_sample(pipeline: Pipeline, batch: list[RAGSample]) -> float:
    start = time.process_time()
    for sample in batch:
        await pipeline(sample)
    return (time.process_time() - start) / len(batch) * 1e6  # microseconds


async def main(n: int, rounds: int) -> None:
    print(machine())
    plain = samples(n, history=False, sessions=False)
    with_history = samples(n, history=True, sessions=False)
    turns = samples(n, history=True, sessions=True)
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisProcess(Path(tmp))
        redis.start()
        try:
            results: dict[str, list[float]] = {k: [] for k in ("baseline", "history", "memory", "redis")}
            for r in range(rounds):
                configs = {
                    "baseline": (Pipeline(RAGEvaluator(sample_rate=1.0, cache=False)), plain),
                    "history": (Pipeline(RAGEvaluator(sample_rate=1.0, cache=False)), with_history),
                    "memory": (
                        Pipeline(RAGEvaluator(sample_rate=1.0, cache=False), sessions=SessionScorer(idle_s=3600)),
                        turns,
                    ),
                    "redis": (
                        Pipeline(
                            RAGEvaluator(sample_rate=1.0, cache=False),
                            sessions=SessionScorer(
                                store=RedisSessionStore(redis.url, project=f"bench-{r}"), idle_s=3600
                            ),
                        ),
                        turns,
                    ),
                }
                order = list(configs) if r % 2 == 0 else list(reversed(configs))
                for name in order:
                    pipeline, batch = configs[name]
                    await cpu_per_sample(pipeline, batch[:20])  # warm-up
                    results[name].append(await cpu_per_sample(pipeline, batch))
                    await pipeline.aclose()
        finally:
            redis.stop()
    base = results["baseline"]
    print(f"{n} samples x {rounds} rounds; CPU per sample, median over rounds, and ratio to the baseline of each round")
    for name, label in (
        ("baseline", "baseline (free tiers, no history, no session)"),
        ("history", "with a 6-turn history"),
        ("memory", "with history + session tally in memory"),
        ("redis", "with history + session tally in Redis"),
    ):
        ratios = [v / b for v, b in zip(results[name], base, strict=True)]
        print(
            f"  {label:48s} {statistics.median(results[name]):8.1f} us   x{statistics.median(ratios):.3f} "
            f"[{min(ratios):.3f}..{max(ratios):.3f}]"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.rounds))
