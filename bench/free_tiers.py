"""The free tiers (deterministic checks + lexical grounding) against every goal of issue #18, in one run.

On a labelled JSONL set (the dev split), on ``synth`` perturbations of it, and on the rewording suite
(tests/data/rewordings.json), it reports the share of items decided, the precision of those decisions
(a ``fail`` is right when the label is a fail label), and faithful items failed; then the throughput of
``RAGEvaluator.evaluate()``. A lexical baseline runs side by side on the same items in the same
process: ``fail`` when a number or capitalised word of the answer is not among the contexts' and the
question's ``lower().split()`` tokens (punctuation stripped), the usual overlap check without any
normalisation.

    python bench/free_tiers.py ../shared/data/dev_halueval_qa.jsonl
    python bench/free_tiers.py ../shared/data/dev_halueval_qa.jsonl --show 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ragtriage import RAGEvaluator
from ragtriage.gate.datasets import FAIL_LABELS, Item, load_dataset
from ragtriage.gate.synth import synthesize

SUITE = Path(__file__).resolve().parent.parent / "tests" / "data" / "rewordings.json"
_STRIP = str.maketrans({c: " " for c in string.punctuation})

Decide = Callable[[str, str, Sequence[str]], bool]  # True: the tier says fail


def lexical_fail(question: str, answer: str, contexts: Sequence[str]) -> bool:
    """The baseline: any number or capitalised word of the answer missing from the evidence's tokens."""
    known = set(" ".join((question, *contexts)).lower().translate(_STRIP).split())
    words = answer.translate(_STRIP).split()
    return any((w[0].isdigit() or (w[0].isupper() and i > 0)) and w.lower() not in known for i, w in enumerate(words))


def score(items: Sequence[Item], decide: Decide) -> dict[str, float]:
    fails = [i for i in items if decide(i.question, i.answer, i.contexts)]
    right = sum(1 for i in fails if i.label in FAIL_LABELS)
    positives = sum(1 for i in items if i.label in FAIL_LABELS)
    return {
        "n": len(items),
        "decided": len(fails) / len(items) if items else 0.0,
        "fails": len(fails),
        "precision": right / len(fails) if fails else float("nan"),
        "recall": right / positives if positives else float("nan"),
        "faithful_failed": len(fails) - right,
    }


def line(name: str, s: dict[str, float]) -> str:
    return (
        f"  {name:28s} n={s['n']:5.0f}  decided {s['decided']:6.1%}  fails {s['fails']:4.0f}  "
        f"precision {s['precision']:6.1%}  recall {s['recall']:6.1%}  faithful failed {s['faithful_failed']:3.0f}"
    )


def suite_items() -> list[Item]:
    groups = json.loads(SUITE.read_text(encoding="utf-8"))["groups"]
    items = []
    for k, g in enumerate(groups):
        for kind, label in (("faithful", "faithful"), ("certain", "hallucinated"), ("other", "hallucinated")):
            for n, answer in enumerate(g[kind]):
                items.append(Item(f"suite-{k}-{kind}-{n}", g["question"], (g["context"],), answer, label, kind))
    return items


async def throughput(evaluator: RAGEvaluator, items: Sequence[Item], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for i in items:
            await evaluator.evaluate(i.question, i.answer, list(i.contexts))
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def baseline_throughput(items: Sequence[Item], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for i in items:
            lexical_fail(i.question, i.answer, i.contexts)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


async def main(dev: list[Item], show: int) -> None:
    evaluator = RAGEvaluator(sample_rate=1.0, cache=False)
    verdicts: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    synth = synthesize(dev, seed=0).items
    suite = suite_items()
    for item in (*dev, *synth, *suite):
        result = await evaluator.evaluate(item.question, item.answer, list(item.contexts))
        verdicts[item.id], notes[item.id] = result.verdict, result.notes
    if "pass" in verdicts.values():
        print("ERROR: the free tiers returned pass")

    def ours(items: Sequence[Item]) -> dict[str, float]:
        ids = iter(items)
        return score(items, lambda q, a, c: verdicts[next(ids).id] == "fail")

    print("free tiers (RAGEvaluator, no judge) | lexical baseline, same items, same run")
    for name, items in (("dev split", dev), ("synth perturbations", synth)):
        print(line(f"{name}: free tiers", ours(items)))
        print(line(f"{name}: lexical baseline", score(items, lexical_fail)))
    kinds = Counter(i.perturbation for i in synth)
    for kind in kinds:
        subset = [i for i in synth if i.perturbation == kind]
        print(line(f"  synth {kind}", ours(subset)))
    faithful = [i for i in suite if i.label == "faithful"]
    certain = [i for i in suite if i.category == "certain"]
    other = [i for i in suite if i.category == "other"]
    for name, decide in (("free tiers", None), ("lexical baseline", lexical_fail)):

        def failed(i: Item, decide: Decide | None = decide) -> bool:
            return verdicts[i.id] == "fail" if decide is None else decide(i.question, i.answer, i.contexts)

        print(
            f"  rewording suite, {name:16s}: false fails {sum(map(failed, faithful))}/{len(faithful)} faithful; "
            f"certain near-misses caught {sum(map(failed, certain))}/{len(certain)}; "
            f"other near-misses failed {sum(map(failed, other))}/{len(other)}"
        )
    rate = await throughput(evaluator, dev)
    base = baseline_throughput(dev)
    print(f"  throughput on the dev split: evaluate() {rate:,.0f} items/s; lexical baseline {base:,.0f} items/s")
    wrong = [i for i in (*dev, *synth) if verdicts[i.id] == "fail" and i.label not in FAIL_LABELS]
    wrong += [i for i in faithful if verdicts[i.id] == "fail"]
    for item in wrong[:show]:
        print("  false fail:", item.id, repr(item.answer[:120]), notes[item.id])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--show", type=int, default=0, help="print this many false fails")
    args = parser.parse_args()
    asyncio.run(main(load_dataset(args.dataset), args.show))
