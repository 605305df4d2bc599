"""Can a combination of free-tier signals decide ``fail`` without failing a clean answer? (#22 item 4)

Each signal alone (an unsupported name, a rare word, a derived value...) fails clean answers written by real
LLMs, so it goes to the judge. This script asks whether some *combination* of them is certain: it reads the
findings of ``DeterministicChecker`` on every answer, turns them into a few features, and measures candidate
combinations and a small logistic regression (fitted here, numpy only) against human labels.

Protocol: the candidates and the regression are chosen and fitted on the *training* sets (FaithBench dev,
HaluEval dev) only; the AggreFact sets (CLIFF, Goyal'21) are held out and measured once, as they come. CLIFF is
split by document in two halves (``--half a`` or ``b``, by a hash of the document) so that a second round, if
one is ever needed, still has a half nobody looked at. A candidate may become a certain rule only if it fails
no clean answer on any set (training, held out, the rewording suite's faithful answers) and wins coverage.

    python bench/combiner.py --faithbench ../shared/data/faithbench_dev.jsonl \\
        --halueval ../shared/data/dev_halueval_qa.jsonl \\
        --aggrefact CLIFF_error_types.csv --aggrefact Goyal21_error_types.csv --half a

Each cell: fires / precision / clean answers fired on / coverage (unfaithful answers fired on, among those the
certain rules do not already fail). Answers the certain rules already fail are left out of every count.

Outcome (docs/benchmarks.md, "Combining signals"): every candidate and the regression failed clean CLIFF-a
summaries, so none ships. A context-side check designed after round 1 (``name_swap``: a context's name with one
word replaced) met the bar on the sealed CLIFF-b, but forged fails on ordinary aliases (``Joseph Biden`` where a
context says ``Joe Biden``, ``Tottenham Spurs`` for ``Tottenham Hotspur``), so it does not ship either.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from free_tiers import aggrefact, faithbench, half_of, suite

from ragtriage.checks._names import NAME_RUN, RUN_LINKS
from ragtriage.checks._normalize import COMMON_WORDS, fold
from ragtriage.checks.deterministic import DeterministicChecker, DeterministicReport
from ragtriage.checks.grounding import EvidenceIndex
from ragtriage.gate.datasets import FAIL_LABELS, Item, load_dataset

_SENTENCE = re.compile(r"[^.!?\n]+")
FEATURES = (
    "name",
    "words",
    "small",
    "derived",
    "variants",
    "kinds",
    "per_sentence",
    "mixed_sentence",
    "missing",
    "absent_full_name",
)


@dataclass(frozen=True)
class Row:
    item: Item
    unfaithful: bool
    certain: bool  # the certain rules already fail it
    features: dict[str, float]


def _mentions(term: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(term) + r"(?!\w)", text) is not None


def absent_full_names(item: Item, report: DeterministicReport) -> list[str]:
    """Runs of two or more capitalised words around an unsupported name of which no word (nor its 5-letter
    stem) is in any context or the question, in any case: a whole name the passage never mentions, not a
    first name added to a surname it does ("Eddie Howe" for "Howe")."""
    contexts, question = EvidenceIndex.build(item.contexts), EvidenceIndex(fold(item.question))

    def known(word: str) -> bool:
        lowered = word.lower().removesuffix("'s")
        return lowered in COMMON_WORDS or any(
            e.has(lowered) or (len(lowered) >= 5 and e.has_prefix(lowered[:5])) for e in (contexts, question)
        )

    answer, runs = fold(item.answer), []
    for name in report.grounding.unsupported_entities:
        for match in NAME_RUN.finditer(answer):
            words = [w for w in re.split(r"[\s-]+", match.group()) if w.lower() not in RUN_LINKS]
            if name in words and len(words) >= 2 and not any(map(known, words)):
                runs.append(match.group())
    return runs


def featurize(item: Item, checker: DeterministicChecker) -> Row:
    report = checker.check(item.question, item.answer, item.contexts)
    g = report.grounding
    kinds = {f.rule for f in report.findings if not f.certain} - {"injection"}
    terms = [*g.unsupported_entities, *g.unsupported_words, *g.unsupported_numbers]
    sentences = _SENTENCE.findall(item.answer)
    per_sentence = max((sum(_mentions(t, s) for t in terms) for s in sentences), default=0)
    mixed = any(
        len({kind for kind, ts in (("n", g.unsupported_entities), ("w", g.unsupported_words),
                                   ("d", g.unsupported_numbers)) if any(_mentions(t, s) for t in ts)}) >= 2
        for s in sentences
    )  # fmt: skip
    features = {
        "name": float(bool(g.unsupported_entities)),
        "words": float(len(g.unsupported_words)),
        "small": float(len(g.unsupported_numbers) - len(g.hard_numbers)),
        "derived": float(len(g.derived)),
        "variants": float(len(g.variants)),
        "kinds": float(len(kinds)),
        "per_sentence": float(per_sentence),
        "mixed_sentence": float(mixed),
        "missing": 0.0 if g.score is None else 1.0 - g.score,
        "absent_full_name": float(bool(absent_full_names(item, report))),
    }
    return Row(item, item.label in FAIL_LABELS, report.decided_fail, features)


#: The combinations tried, each with 0 clean answers failed on both training sets (FaithBench dev, HaluEval
#: dev). Tried on the training sets and dropped there (clean answers failed): ``kinds >= 3`` (1 on
#: FaithBench), ``unsupported terms of two kinds in one sentence`` (1), ``3+ unsupported terms in one
#: sentence`` (17), ``4+ rare words`` (20), ``2+ derived values`` (18), ``a third of the terms unsupported`` (7),
#: ``a small number`` (2), ``a name`` alone (1: "TV").
CANDIDATES: dict[str, Callable[[dict[str, float]], bool]] = {
    "absent full name": lambda f: f["absent_full_name"] > 0,
    "name + rare word": lambda f: f["name"] > 0 and f["words"] > 0,
    "name + derived value": lambda f: f["name"] > 0 and f["derived"] > 0,
}


class Combiner:
    """Logistic regression over :data:`FEATURES` (each capped at 5, standardised, L2), fitted by gradient
    descent; it decides ``fail`` above the highest score of any clean training answer."""

    def __init__(self, rows: Sequence[Row], l2: float = 1.0, steps: int = 3000, rate: float = 0.1) -> None:
        x = self._matrix(rows)
        y = np.array([r.unfaithful for r in rows], float)
        self.mean, self.scale = x.mean(0), x.std(0) + 1e-9
        z = (x - self.mean) / self.scale
        self.w, self.b = np.zeros(z.shape[1]), 0.0
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-(z @ self.w + self.b)))
            self.w -= rate * (z.T @ (p - y) / len(y) + l2 * self.w / len(y))
            self.b -= rate * float((p - y).mean())
        clean = [s for s, r in zip(self.scores(rows), rows, strict=True) if not r.unfaithful]
        self.threshold = max(clean)

    @staticmethod
    def _matrix(rows: Sequence[Row]) -> np.ndarray:
        return np.array([[min(r.features[k], 5.0) for k in FEATURES] for r in rows])

    def scores(self, rows: Sequence[Row]) -> np.ndarray:
        z = (self._matrix(rows) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.w + self.b)))

    def fires(self, rows: Sequence[Row]) -> list[bool]:
        return [bool(s > self.threshold) for s in self.scores(rows)]

    def describe(self) -> str:
        weights = ", ".join(f"{k} {w:+.2f}" for k, w in zip(FEATURES, self.w / self.scale, strict=True))
        return f"weights per unit: {weights}; fails above {self.threshold:.4f}"


def cell(rows: Sequence[Row], fired: Sequence[bool]) -> str:
    undecided = [(r, f) for r, f in zip(rows, fired, strict=True) if not r.certain]
    hits = [r for r, f in undecided if f]
    if not hits:
        return "0"
    right = sum(r.unfaithful for r in hits)
    positives = sum(r.unfaithful for r, _ in undecided)
    coverage = f"{right / positives:.1%}" if positives else "-"
    return f"{len(hits)} / {right / len(hits):.1%} / {len(hits) - right} / {coverage}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faithbench", type=Path, required=True, help="training: FaithBench dev JSONL")
    parser.add_argument("--halueval", type=Path, required=True, help="training: HaluEval dev JSONL")
    parser.add_argument("--aggrefact", type=Path, action="append", default=[], help="held out: an AggreFact CSV")
    parser.add_argument("--half", choices=("a", "b", "all"), default="a", help="which half of CLIFF's documents")
    args = parser.parse_args()
    checker = DeterministicChecker()
    train = {"FaithBench": faithbench(args.faithbench), "HaluEval": load_dataset(args.halueval)}
    held: dict[str, list[Item]] = {}
    for path in args.aggrefact:
        name, items = aggrefact(path)
        if name == "CLIFF" and args.half != "all":
            name, items = f"CLIFF-{args.half}", [i for i in items if half_of(i) == args.half]
        held[name] = items
    held["rewording faithful"] = suite(("faithful",))
    rows = {name: [featurize(i, checker) for i in items] for name, items in {**train, **held}.items()}
    combiner = Combiner([r for name in train for r in rows[name]])
    print("combiner:", combiner.describe())
    print("| candidate | " + " | ".join(f"{n} ({'train' if n in train else 'held out'})" for n in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for name, rule in CANDIDATES.items():
        print(f"| {name} | " + " | ".join(cell(rs, [rule(r.features) for r in rs]) for rs in rows.values()) + " |")
    print("| logistic combiner | " + " | ".join(cell(rs, combiner.fires(rs)) for rs in rows.values()) + " |")


if __name__ == "__main__":
    main()
