"""The free tiers (deterministic checks + lexical grounding) per rule, on answers written by real LLMs (#22).

A free-tier ``fail`` ends the cascade, so a rule may decide ``fail`` only where it is right on answers that
real models wrote and people labelled. For every labelled set given, this prints how often each rule fires,
its precision (a firing is right when the answer is labelled unfaithful: for FaithBench any annotation,
Benign included; for CLIFF any error span, extrinsic included) and the clean answers it fires on, for
certain rules and signals alike; then the verdicts (fails, precision, clean answers failed, coverage = the
share of unfaithful answers failed). Sets:

- ``--faithbench PATH``: FaithBench (Bao et al., NAACL 2025) JSONL, one summary a line with ``source``,
  ``summary``, ``annotations`` (``../shared/data/faithbench_dev.jsonl``; CC BY-NC-SA 4.0, not shipped).
- ``--aggrefact PATH`` (repeatable): a span-annotated set of real model summaries (BART, Pegasus and
  older summarisers on XSum and CNN/DM) as aggregated by AggreFact (Tang et al., ACL 2023), one of
  ``data/error_type_mapping/{CLIFF,Goyal21}_error_types.csv`` of github.com/Liyan06/AggreFact: CLIFF (Cao &
  Wang, EMNLP 2021; 600 summaries) and Goyal21 (Goyal & Durrett, NAACL 2021; 150 lower-cased summaries).
  No licence is given there, so they are not shipped: download the files. Columns ``doc``, ``summ``,
  ``error_type`` (``correct`` or empty when the annotators found no error, extrinsic errors included).
- ``--halueval PATH``: a JSONL in ragtriage's dataset format (``../shared/data/dev_halueval_qa.jsonl``),
  with its ``synth`` perturbations.
- always: the rewording suite (tests/data/rewordings.json): faithful rewordings must never fail.

    python bench/free_tiers.py --faithbench ../shared/data/faithbench_dev.jsonl \\
        --aggrefact CLIFF_error_types.csv --aggrefact Goyal21_error_types.csv \\
        --halueval ../shared/data/dev_halueval_qa.jsonl [--half a|b] [--show 5] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ragtriage import RAGEvaluator
from ragtriage.checks.deterministic import CERTAIN_RULES, DeterministicChecker
from ragtriage.gate.datasets import FAIL_LABELS, Item, load_dataset
from ragtriage.gate.synth import synthesize

SUITE = Path(__file__).resolve().parent.parent / "tests" / "data" / "rewordings.json"
SUMMARY_QUESTION = (
    "Provide a concise summary of the following passage, covering the core pieces of information described."
)


def faithbench(path: Path) -> list[Item]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        label = "hallucinated" if row["annotations"] else "faithful"
        items.append(Item(row["id"], SUMMARY_QUESTION, (row["source"],), row["summary"], label, row["model"]))
    return items


def aggrefact(path: Path) -> tuple[str, list[Item]]:
    """The set's name (its ``dataset`` column) and its items."""
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    items = [
        Item(
            f"{r['dataset']}-{r['origin']}-{r['id']}-{r.get('model_name', n)}",
            SUMMARY_QUESTION,
            (r["doc"],),
            r["summ"],
            "faithful" if r["error_type"] in ("correct", "") else "hallucinated",
            f"{r['origin']}/{r['cut']}",
        )
        for n, r in enumerate(rows)
    ]
    return (rows[0]["dataset"] if rows else path.stem), items


def half_of(item: Item) -> str:
    """``a`` or ``b``, by a hash of the item's passage: halves of a set by document, for held-out rounds."""
    return "a" if hashlib.sha1(item.contexts[0].encode()).digest()[0] % 2 == 0 else "b"


def suite(kinds: Sequence[str] = ("faithful", "certain", "other")) -> list[Item]:
    groups = json.loads(SUITE.read_text(encoding="utf-8"))["groups"]
    items = []
    for k, g in enumerate(groups):
        for kind in kinds:
            label = "faithful" if kind == "faithful" else "hallucinated"
            for n, answer in enumerate(g[kind]):
                items.append(Item(f"suite-{k}-{kind}-{n}", g["question"], (g["context"],), answer, label, kind))
    return items


class Rules:
    """Per rule: the items it fired on, from one ``DeterministicChecker.check`` per item."""

    def __init__(self, items: Sequence[Item]) -> None:
        checker = DeterministicChecker()
        self.items = list(items)
        self.fired: dict[str, list[Item]] = {}
        self.notes: dict[str, list[str]] = {}
        for item in self.items:
            report = checker.check(item.question, item.answer, item.contexts)
            for rule in dict.fromkeys(f.rule for f in report.findings):
                self.fired.setdefault(rule, []).append(item)
            self.notes[item.id] = [str(f) for f in report.findings]

    def row(self, rule: str) -> tuple[int, float | None, int]:
        fired = self.fired.get(rule, [])
        right = sum(1 for i in fired if i.label in FAIL_LABELS)
        return len(fired), (right / len(fired) if fired else None), len(fired) - right


def verdicts(items: Sequence[Item], failed: set[str]) -> dict[str, float]:
    fails = [i for i in items if i.id in failed]
    right = sum(1 for i in fails if i.label in FAIL_LABELS)
    positives = sum(1 for i in items if i.label in FAIL_LABELS)
    return {
        "n": len(items),
        "unfaithful": positives,
        "fails": len(fails),
        "precision": right / len(fails) if fails else float("nan"),
        "clean_failed": len(fails) - right,
        "coverage": right / positives if positives else float("nan"),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


async def main(sets: dict[str, list[Item]], show: int, markdown: bool) -> int:
    evaluator = RAGEvaluator(sample_rate=1.0, cache=False)
    failed: set[str] = set()
    for items in sets.values():
        for item in items:
            result = await evaluator.evaluate(item.question, item.answer, list(item.contexts))
            if result.verdict == "fail":
                failed.add(item.id)
            elif result.verdict == "pass":
                print("ERROR: the free tiers returned pass for", item.id)
    rules = {name: Rules(items) for name, items in sets.items()}
    names = sorted({r for x in rules.values() for r in x.fired}, key=lambda r: (r not in CERTAIN_RULES, r))

    print("Per rule: fires, precision (share on unfaithful answers), clean answers it fired on")
    header = ["rule", "decides", *sets]
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
    for rule in names:
        cells = []
        for x in rules.values():
            n, precision, clean = x.row(rule)
            cells.append(f"{n} / {_pct(precision)} / {clean}" if n else "0")
        status = "fail" if rule in CERTAIN_RULES else "signal"
        print(("| " + " | ".join([rule, status, *cells]) + " |") if markdown else f"  {rule:20s} {status:6s} {cells}")

    print("\nVerdicts: fails, precision, clean answers failed, coverage of the unfaithful answers")
    bad = 0
    for name, items in sets.items():
        s = verdicts(items, failed)
        print(
            f"  {name:22s} n={s['n']:4.0f} ({s['unfaithful']:.0f} unfaithful): fails {s['fails']:3.0f}, precision "
            f"{s['precision']:6.1%}, clean failed {s['clean_failed']:2.0f}, coverage {s['coverage']:5.1%}"
        )
        bad += s["clean_failed"] > 0 or s["precision"] < 0.99
        wrong = [i for i in items if i.id in failed and i.label not in FAIL_LABELS]
        for item in wrong[:show]:
            print("    clean failed:", item.id, repr(item.answer[:160]), rules[name].notes[item.id])
    return 1 if bad else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faithbench", type=Path, help="FaithBench JSONL (e.g. ../shared/data/faithbench_dev.jsonl)")
    parser.add_argument("--aggrefact", type=Path, action="append", default=[], help="an AggreFact *_error_types.csv")
    parser.add_argument("--halueval", type=Path, help="a ragtriage-format JSONL (../shared/data/dev_halueval_qa.jsonl)")
    parser.add_argument("--half", choices=("a", "b"), help="only this half of each AggreFact set's documents")
    parser.add_argument("--show", type=int, default=0, help="print this many clean answers failed, per set")
    parser.add_argument("--markdown", action="store_true", help="print the per-rule table as Markdown")
    args = parser.parse_args()
    sets: dict[str, list[Item]] = {}
    if args.faithbench:
        sets["FaithBench"] = faithbench(args.faithbench)
    for path in args.aggrefact:
        name, items = aggrefact(path)
        if args.half:
            name, items = f"{name}-{args.half}", [i for i in items if half_of(i) == args.half]
        sets[name] = items
    if args.halueval:
        dev = load_dataset(args.halueval)
        sets["HaluEval"] = dev
        sets["synth"] = synthesize(dev, seed=0).items
    sets["rewording faithful"] = suite(("faithful",))
    sets["rewording near-misses"] = suite(("certain", "other"))
    sys.exit(asyncio.run(main(sets, args.show, args.markdown)))
