"""Labelled RAG datasets (JSONL), shared by ``synth``, ``ci`` and ``calibrate``.

One JSON object a line: ``id, question, contexts, answer, label, category``,
optional ``reference``, and for synthesized rows ``perturbation`` and
``source_id``. A bad row raises :class:`DatasetError` naming the file and line,
because a gate that silently skips rows gates nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtriage.errors import DatasetError

#: Labels whose answer a judge should pass.
PASS_LABELS = frozenset({"faithful", "correct", "pass"})
#: Labels whose answer a judge should fail: the positive class of hallucination detection.
FAIL_LABELS = frozenset({"hallucinated", "unfaithful", "unanswerable", "incorrect", "fail"})
LABELS = PASS_LABELS | FAIL_LABELS
_REQUIRED = ("id", "question", "contexts", "answer", "label", "category")
_OPTIONAL = ("reference", "perturbation", "source_id")


@dataclass(frozen=True, slots=True)
class Item:
    """One labelled RAG sample. ``perturbation`` is set on rows ``synth`` made (None: an original row)."""

    id: str
    question: str
    contexts: tuple[str, ...]
    answer: str
    label: str
    category: str
    reference: str | None = None
    perturbation: str | None = None
    source_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def expected(self) -> str:
        """The verdict a correct judge gives: ``"pass"`` or ``"fail"``."""
        return "fail" if self.label in FAIL_LABELS else "pass"

    @property
    def is_hallucination(self) -> bool:
        return self.label in FAIL_LABELS

    @property
    def adversarial(self) -> bool:
        return self.perturbation is not None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data.update(
            id=self.id,
            question=self.question,
            contexts=list(self.contexts),
            answer=self.answer,
            label=self.label,
            category=self.category,
        )
        for name in _OPTIONAL:
            if (value := getattr(self, name)) is not None:
                data[name] = value
        return data


def parse_item(data: object, where: str) -> Item:
    """Validate one decoded row; ``where`` (``file:line``) prefixes every error."""
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise DatasetError(f"{where}: missing field(s) {', '.join(missing)}")
    for name in ("id", "question", "answer", "label", "category"):
        if not isinstance(data[name], str) or not data[name].strip():
            raise DatasetError(f"{where}: {name!r} must be a non-empty string, got {data[name]!r}")
    contexts = data["contexts"]
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise DatasetError(f"{where}: 'contexts' must be a list of strings")
    label = data["label"].strip().lower()
    if label not in LABELS:
        raise DatasetError(f"{where}: unknown label {data['label']!r}; use one of {', '.join(sorted(LABELS))}")
    for name in _OPTIONAL:
        if data.get(name) is not None and not isinstance(data[name], str):
            raise DatasetError(f"{where}: {name!r} must be a string when given, got {data[name]!r}")
    extra = {k: v for k, v in data.items() if k not in _REQUIRED and k not in _OPTIONAL}
    return Item(
        id=data["id"],
        question=data["question"],
        contexts=tuple(contexts),
        answer=data["answer"],
        label=label,
        category=data["category"],
        reference=data.get("reference"),
        perturbation=data.get("perturbation"),
        source_id=data.get("source_id"),
        extra=extra,
    )


def load_dataset(path: str | Path) -> list[Item]:
    """Read a JSONL dataset; blank lines are skipped, duplicate ids are an error naming both lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read dataset: {exc.strerror or exc}") from exc
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
        item = parse_item(data, where)
        if item.id in seen:
            raise DatasetError(f"{where}: duplicate id {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise DatasetError(f"{path}: the dataset has no rows")
    return items


def write_dataset(path: str | Path, items: Iterable[Item]) -> int:
    """Write items as JSONL; returns how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count
