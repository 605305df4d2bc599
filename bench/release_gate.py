"""Free tiers (cache off, deterministic only) on a labelled dataset and on its `synth` perturbations.

    python bench/release_gate.py ../shared/data/dev_halueval_qa.jsonl

Prints, per original set and per perturbation kind: items, decided share, precision of the decisions
(the free tiers only ever decide "fail", so precision = decided items whose label is a fail label) and
hallucination recall (caught / hallucinated items, undecided = missed). No LLM, no network.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict

from ragtriage import RAGEvaluator
from ragtriage.gate.datasets import Item, load_dataset
from ragtriage.gate.synth import synthesize


async def verdicts(items: list[Item]) -> list[str]:
    evaluator = RAGEvaluator(sample_rate=1.0, cache=False)
    return [(await evaluator.evaluate(i.question, i.answer, i.contexts)).verdict for i in items]


def row(name: str, items: list[Item], verdicts: list[str]) -> str:
    decided = [(i, v) for i, v in zip(items, verdicts, strict=True) if v != "uncertain"]
    right = sum(v == i.expected for i, v in decided)
    positives = sum(i.is_hallucination for i in items)
    caught = sum(i.is_hallucination and v == "fail" for i, v in zip(items, verdicts, strict=True))
    precision = f"{right / len(decided):.1%}" if decided else "n/a"
    recall = f"{caught / positives:.1%}" if positives else "n/a"
    return f"| {name} | {len(items)} | {len(decided) / len(items):.1%} | {precision} | {recall} |"


def main(path: str, seed: int = 0) -> None:
    originals = load_dataset(path)
    synth = synthesize(originals, seed=seed)
    print(f"dataset {path}: {len(originals)} items; synth seed {seed}: {len(synth.items)} perturbed items")
    print("| set | items | decided | precision | hallucination recall |")
    print("| --- | --- | --- | --- | --- |")
    print(row("original", originals, asyncio.run(verdicts(originals))))
    by_kind: dict[str, list[Item]] = defaultdict(list)
    for item in synth.items:
        by_kind[item.perturbation or "?"].append(item)
    all_items: list[Item] = []
    all_verdicts: list[str] = []
    for kind, items in by_kind.items():
        v = asyncio.run(verdicts(items))
        all_items += items
        all_verdicts += v
        print(row(f"synth: {kind}", items, v))
    print(row("synth: all", all_items, all_verdicts))
    skipped = {k: synth.not_applicable[k] for k in synth.not_applicable}
    print(f"not applicable (no number/date/name/verb to change, or label not faithful): {skipped}")
    print(f"dropped for context leakage: {dict(synth.leaked) or 0}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python bench/release_gate.py DATASET.jsonl [SEED]")
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
