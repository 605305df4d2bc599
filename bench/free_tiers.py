"""The free tiers (deterministic checks + lexical grounding) on a labelled JSONL set.

Reports the share of items they decide and the precision of those decisions
(a decided ``fail`` is right when the item is labelled hallucinated).

    python bench/free_tiers.py ../shared/data/dev_halueval_qa.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from pathlib import Path

from ragtriage import RAGEvaluator


async def main(rows: list[dict], show: int) -> None:
    evaluator = RAGEvaluator(sample_rate=1.0, cache=False)
    outcome: Counter[tuple[str, str]] = Counter()
    wrong = []
    for row in rows:
        result = await evaluator.evaluate(row["question"], row["answer"], row["contexts"])
        outcome[(result.verdict, row["label"])] += 1
        if result.verdict == "fail" and row["label"] != "hallucinated":
            wrong.append((row["id"], row["answer"], result.notes))
    n = len(rows)
    decided = sum(v for (verdict, _), v in outcome.items() if verdict != "uncertain")
    fails = sum(v for (verdict, _), v in outcome.items() if verdict == "fail")
    true_fails = outcome[("fail", "hallucinated")]
    hallucinated = sum(v for (_, label), v in outcome.items() if label == "hallucinated")
    print(f"items: {n}  decided: {decided} ({decided / n:.1%})")
    print(
        f"fail decisions: {fails}, precision {true_fails / fails if fails else float('nan'):.1%}, "
        f"recall of hallucinations {true_fails / hallucinated:.1%}"
    )
    for row in wrong[:show]:
        print("  false fail:", row)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--show", type=int, default=0, help="print this many false fails")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.dataset.read_text().splitlines() if line.strip()]
    asyncio.run(main(rows, args.show))
