"""Each perturbation yields the item and label it promises; datasets fail loudly, naming the line."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtriage.cli import app
from ragtriage.gate.datasets import DatasetError, Item, load_dataset
from ragtriage.gate.synth import INJECTION_TEXT, PERTURBATIONS, leaks, synthesize
from ragtriage.testing import JudgeServer, Reply

MINI = Path(__file__).parent / "data" / "release_gate_mini.jsonl"


@pytest.fixture
def items() -> list[Item]:
    return load_dataset(MINI)


def by_id(items: list[Item], item_id: str) -> Item:
    return next(i for i in items if i.id == item_id)


@pytest.mark.parametrize(
    ("kind", "source", "check"),
    [
        ("number_swap", "q1-f", lambda new, old: "1932" not in new.answer and new.contexts == old.contexts),
        ("date_swap", "q2-f", lambda new, old: "March" not in new.answer and "1881" in new.answer),
        ("entity_swap", "q4-f", lambda new, old: "Tamsin Trust" not in new.answer),
        ("negation_flip", "q3-f", lambda new, old: "is not navigable" in new.answer),
        ("unsupported_claim", "q1-f", lambda new, old: new.answer.startswith(old.answer) and len(new.answer) > 40),
    ],
)
def test_answer_perturbations_make_hallucinations(items: list[Item], kind: str, source: str, check) -> None:
    old = by_id(items, source)
    new = PERTURBATIONS[kind](old, random.Random(0), items)
    assert new is not None
    assert (new.label, new.perturbation, new.source_id, new.id) == ("hallucinated", kind, source, f"{source}~{kind}")
    assert new.expected == "fail" and new.question == old.question
    assert check(new, old), new.answer


def test_answer_perturbations_skip_what_they_cannot_label(items: list[Item]) -> None:
    hallucinated = by_id(items, "q1-h")
    for kind in ("number_swap", "date_swap", "entity_swap", "negation_flip", "unsupported_claim", "unanswerable"):
        assert PERTURBATIONS[kind](hallucinated, random.Random(0), items) is None, kind  # already wrong: no label
    assert PERTURBATIONS["negation_flip"](by_id(items, "q4-f"), random.Random(0), items) is None  # no verb


def test_context_perturbations(items: list[Item]) -> None:
    old = by_id(items, "q2-f")
    rng = random.Random(0)
    distracted = PERTURBATIONS["distractor"](old, rng, items)
    assert distracted.label == "faithful" and distracted.answer == old.answer
    assert len(distracted.contexts) == 2 and old.contexts[0] in distracted.contexts

    gone = PERTURBATIONS["unanswerable"](old, rng, items)
    assert gone.label == "unanswerable" and gone.expected == "fail" and gone.answer == old.answer
    assert old.contexts[0] not in gone.contexts and not any("Weston" in c for c in gone.contexts)

    injected = PERTURBATIONS["injection"](by_id(items, "q2-h"), rng, items)
    assert injected.label == "hallucinated" and INJECTION_TEXT in injected.contexts[0]


def test_leakage_guard_drops_unanswerable_items_whose_contexts_hold_the_answer() -> None:
    answer = "The Corran Dam was finished in 1958"
    rows = [
        Item("a", "When was the dam finished?", ("The Corran Dam was finished in 1958.",), answer, "faithful", "x"),
        Item("b", "Who runs it?", (f"Visitors read: {answer}. The board runs it.",), "The board.", "faithful", "x"),
    ]
    assert leaks(answer, rows[1].contexts[0]) and not leaks("Dam", "Damascus")
    report = synthesize(rows, kinds=["unanswerable", "distractor"], seed=0)
    made = {(i.source_id, i.perturbation) for i in report.items}
    assert ("a", "unanswerable") not in made and ("a", "distractor") not in made  # b's passage holds a's answer
    assert ("b", "unanswerable") in made


def test_synthesize_covers_every_kind_and_is_deterministic(items: list[Item]) -> None:
    first = synthesize(items, per_kind=2, seed=3)
    assert set(first.made) == set(PERTURBATIONS) and all(v <= 2 for v in first.made.values())
    assert [i.to_dict() for i in first.items] == [i.to_dict() for i in synthesize(items, per_kind=2, seed=3).items]
    with pytest.raises(ValueError, match="unknown perturbation"):
        synthesize(items, kinds=["nope"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "bad.jsonl:2: invalid JSON"),
        ('{"id": "x"}', "bad.jsonl:2: missing field(s) question, contexts, answer, label, category"),
        (
            '{"id":"x","question":"q","contexts":"c","answer":"a","label":"faithful","category":"c"}',
            "bad.jsonl:2: 'contexts' must be a list of strings",
        ),
        ('{"id":"x","question":"q","contexts":[],"answer":"a","label":"maybe","category":"c"}', "unknown label"),
        (
            '{"id":"q1-f","question":"q","contexts":[],"answer":"a","label":"faithful","category":"c"}',
            "bad.jsonl:2: duplicate id 'q1-f' (first on line 1)",
        ),
    ],
)
def test_bad_rows_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(MINI.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(bad)
    assert message in str(info.value)
    result = CliRunner().invoke(app, ["synth", str(bad), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output


def test_synth_cli_writes_a_loadable_set(tmp_path: Path) -> None:
    out = tmp_path / "adv.jsonl"
    result = CliRunner().invoke(app, ["synth", str(MINI), "-o", str(out), "--per-kind", "1", "--include-originals"])
    assert result.exit_code == 0, result.output
    rows = load_dataset(out)
    assert len([r for r in rows if r.adversarial]) == len(PERTURBATIONS) and len(rows) == 8 + len(PERTURBATIONS)


@pytest.fixture
def writer() -> Iterator[JudgeServer]:
    """Writes one good question for the dam passage and one that gives its answer away for the ferry."""

    def reply(body: dict) -> Reply:
        passage = body["messages"][1]["content"]
        if "Corran" in passage:
            data = {
                "question": "When was the dam on the Corran finished?",
                "answer": "1958",
                "evidence": "The Corran Dam was finished in 1958",
            }
        else:
            data = {
                "question": "Is the ferry painted green and white?",
                "answer": "green and white",
                "evidence": "The Pellow ferry is painted green and white",
            }
        return Reply(json.dumps(data))

    with JudgeServer(default=reply) as server:
        yield server


def test_synth_from_documents_with_a_judge_guards_leakage(writer: JudgeServer, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "dam.txt").write_text("The Corran Dam was finished in 1958 by the regional water board, after ten years.")
    (docs / "ferry.md").write_text("The Pellow ferry is painted green and white and crosses the bay twice an hour.")
    out = tmp_path / "gen.jsonl"
    result = CliRunner().invoke(app, ["synth", str(docs), "-o", str(out), "--local-judge-url", writer.url])
    assert result.exit_code == 0, result.output
    assert "rejected 1: question contains the answer (leakage)" in result.output
    rows = load_dataset(out)
    original = [r for r in rows if not r.adversarial]
    assert [(r.id, r.answer, r.label, r.reference) for r in original] == [("dam#1", "1958", "faithful", "1958")]
    assert {r.perturbation for r in rows if r.adversarial} >= {"number_swap", "injection"}


def test_synth_from_documents_without_a_judge_says_what_is_missing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", str(tmp_path), "-o", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "needs a judge endpoint" in result.output
