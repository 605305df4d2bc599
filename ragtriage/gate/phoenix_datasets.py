"""Production traces into Phoenix datasets, and Phoenix datasets into the release gate.

``ragtriage dataset push`` picks evaluated traces of a project (by verdict, deciding tier, disagreement with the
auditor or a reviewer, time window), rebuilds each one's question, contexts and answer from its spans (the same
:func:`ragtriage.intake.assembly.assemble` the span processor runs), and appends them to a Phoenix dataset. Each
example keeps its link to the source span (the upload's ``span_ids``, which ``arize-phoenix-client`` fills from
``span_id_key``) and a stable id (``example_ids``: the sample id), so pushing a trace twice updates one example.

Phoenix's REST API (checked against 20.26): ``POST /v1/datasets/upload?sync=true`` with ``action="append"``
creates the dataset when it does not exist; ``GET /v1/datasets?name=`` and ``GET /v1/datasets/{id}/examples``
read it back. Hand-written over httpx like the rest of ragtriage: ``import phoenix.client`` would import the whole
server when ``arize-phoenix`` is installed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx

from ragtriage.dashboards.sources import EvalRecord, records_from_phoenix
from ragtriage.errors import DatasetError
from ragtriage.export.phoenix import auth_headers, base_url
from ragtriage.gate.datasets import LABELS, Item
from ragtriage.intake.assembly import BufferedSpan, assemble
from ragtriage.sample import RAGSample

Disagreement = Literal["auditor", "human", "any"]
DISAGREEMENTS: tuple[Disagreement, ...] = ("auditor", "human", "any")
_KIND = "openinference.span.kind"


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """Which evaluated traces to push; every given condition must hold."""

    verdicts: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    disagree: Disagreement | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.disagree is not None and self.disagree not in DISAGREEMENTS:
            raise ValueError(f"disagree must be one of {', '.join(DISAGREEMENTS)}, got {self.disagree!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)):
            raise TypeError(f"limit must be an int, got {self.limit!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit!r}")

    def matches(self, record: EvalRecord) -> bool:
        if self.verdicts and record.verdict not in self.verdicts:
            return False
        if self.tiers and record.tier not in self.tiers:
            return False
        if self.until is not None and (record.time is None or record.time > self.until):
            return False
        auditor = record.audit_verdict in ("pass", "fail") and record.audit_verdict != record.verdict
        human = record.human_verdict in ("pass", "fail") and record.human_verdict != record.verdict
        wanted = {"auditor": auditor, "human": human, "any": auditor or human, None: True}
        return wanted[self.disagree]


def label_of(record: EvalRecord) -> tuple[str, str] | None:
    """An example's label and where it came from: a reviewer's, else the auditor's, else ragtriage's verdict;
    ``None`` when none of them decided (an ``uncertain`` trace gates nothing)."""
    for source, label in (
        ("human", record.human_verdict),
        ("auditor", record.audit_verdict),
        ("ragtriage", record.verdict),
    ):
        if label in ("pass", "fail"):
            return label, source
    return None


@dataclass
class PushReport:
    """What ``dataset push`` did: examples sent, and why the other matching traces were not."""

    dataset_id: str | None = None
    matched: int = 0
    pushed: int = 0
    created: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def push_traces(
    endpoint: str,
    project: str,
    name: str,
    where: TraceFilter,
    *,
    api_key: str | None = None,
    timeout_s: float = 30.0,
) -> PushReport:
    """Append the evaluated traces of ``project`` that match ``where`` to the Phoenix dataset ``name``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    records = [
        r for r in records_from_phoenix(endpoint, project, api_key=api_key, since=where.since) if where.matches(r)
    ]
    if where.limit is not None:
        records = records[-where.limit :]  # the most recent
    report = PushReport(matched=len(records))
    rows: list[tuple[RAGSample, EvalRecord, tuple[str, str]]] = []
    with _client(endpoint, api_key, timeout_s) as client:
        for record in records:
            labelled = label_of(record)
            if labelled is None:
                report.skipped["no pass/fail label"] += 1
                continue
            sample = _sample(client, project, record)
            if sample is None:
                report.skipped["question, contexts or answer not found in the trace's spans"] += 1
                continue
            rows.append((sample, record, labelled))
        if rows:
            data = _upload(
                client,
                name,
                inputs=[{"question": s.question, "contexts": s.contexts} for s, _, _ in rows],
                outputs=[{"answer": s.answer} for s, _, _ in rows],
                metadata=[_metadata(s, r, label, source, project) for s, r, (label, source) in rows],
                span_ids=[f"{s.root_span_id:016x}" for s, _, _ in rows],
                example_ids=[s.sample_id for s, _, _ in rows],
            )
            report.dataset_id, report.created = data["dataset_id"], data.get("num_created_examples", 0)
    report.pushed = len(rows)
    return report


def push_items(
    endpoint: str, name: str, items: Sequence[Item], *, api_key: str | None = None, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Append dataset items (e.g. ``synth``'s adversarial variants) to the Phoenix dataset ``name``."""
    with _client(endpoint, api_key, timeout_s) as client:
        return _upload(
            client,
            name,
            inputs=[{"question": i.question, "contexts": list(i.contexts)} for i in items],
            outputs=[{"answer": i.answer} for i in items],
            metadata=[
                {k: v for k, v in i.to_dict().items() if k not in ("question", "contexts", "answer")} for i in items
            ],
            span_ids=[None for _ in items],
            example_ids=[i.id for i in items],
        )


def load_phoenix_dataset(
    endpoint: str, name: str, *, api_key: str | None = None, timeout_s: float = 30.0
) -> list[Item]:
    """The examples of the Phoenix dataset ``name`` as gate items (latest version).

    Reads ragtriage's own examples (``input.question``/``contexts``, ``output.answer``, ``metadata.label``) and
    the common spellings of other datasets (``input``/``query``, ``context``/``documents``, ``output``/
    ``response``, a ``label`` in output or metadata). A row without a question, an answer or a known label raises
    :class:`DatasetError` naming the example: a gate that skips rows gates nothing."""
    with _client(endpoint, api_key, timeout_s) as client:
        found = _json(client.get("/v1/datasets", params={"name": name}), f"dataset {name!r}").get("data", [])
        if not found:
            raise DatasetError(f"Phoenix at {base_url(endpoint)} has no dataset named {name!r}")
        dataset_id = found[0]["id"]
        examples = _json(client.get(f"/v1/datasets/{dataset_id}/examples"), f"dataset {name!r}")["data"]["examples"]
    if not examples:
        raise DatasetError(f"Phoenix dataset {name!r} has no examples")
    return [_item(example, f"Phoenix dataset {name!r}, example {example.get('id')}") for example in examples]


# -- helpers -----------------------------------------------------------------------------------------------


def _client(endpoint: str, api_key: str | None, timeout_s: float) -> httpx.Client:
    return httpx.Client(base_url=base_url(endpoint), headers=auth_headers(api_key), timeout=timeout_s)


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        raise DatasetError(f"Phoenix answered HTTP {response.status_code} for {what}: {response.text[:300]}")
    data: dict[str, Any] = response.json()
    return data


def _sample(client: httpx.Client, project: str, record: EvalRecord) -> RAGSample | None:
    """The record's trace rebuilt from its spans in Phoenix, as the span processor would have assembled it."""
    if record.trace_id is None or record.span_id is None:
        return None
    spans: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"trace_id": record.trace_id, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = _json(client.get(f"/v1/projects/{project}/spans", params=params), f"trace {record.trace_id}")
        spans += page.get("data", [])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    buffered: list[BufferedSpan] = []
    for span in spans:
        attributes = dict(_flatten(span.get("attributes") or {}))
        if _KIND not in attributes and span.get("span_kind"):
            attributes[_KIND] = span["span_kind"]
        parent = span.get("parent_id")
        buffered.append((attributes, int(span["context"]["span_id"], 16), int(parent, 16) if parent else 0, not parent))
    samples, _ = assemble(int(record.trace_id, 16), buffered)
    root = int(record.span_id, 16)
    return next((s for s in samples if s.root_span_id == root), None)


def _flatten(attributes: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Phoenix may return dotted attributes nested (``{"retrieval": {"documents": [...]}}``): the flat keys."""
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                yield from _flatten(item, f"{name}.{i}.")
        else:
            yield name, value


def _metadata(sample: RAGSample, record: EvalRecord, label: str, source: str, project: str) -> dict[str, Any]:
    return {
        "id": sample.sample_id,
        "label": label,
        "label_source": source,
        "category": record.tier,
        "verdict": record.verdict,
        "tier": record.tier,
        "audit_verdict": record.audit_verdict,
        "human_verdict": record.human_verdict,
        "project": project,
        "trace_id": f"{sample.trace_id:032x}",
        "span_id": f"{sample.root_span_id:016x}",
    }


def _upload(client: httpx.Client, name: str, **columns: list[Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": "append", "name": name, **columns}
    if not any(s is not None for s in columns.get("span_ids", [])):
        payload.pop("span_ids", None)
    response = client.post("/v1/datasets/upload", params={"sync": "true"}, json=payload)
    data: dict[str, Any] = _json(response, f"uploading to dataset {name!r}")["data"]
    return data


def _item(example: Mapping[str, Any], where: str) -> Item:
    inputs, outputs = example.get("input") or {}, example.get("output") or {}
    metadata = example.get("metadata") or {}
    question = _first(inputs, ("question", "query", "input"))
    answer = _first(outputs, ("answer", "response", "output")) or _first(inputs, ("answer",))
    contexts: Any = next((inputs[k] for k in ("contexts", "context", "documents") if k in inputs), [])
    if isinstance(contexts, str):
        contexts = [contexts]
    label = str(_first(metadata, ("label",)) or _first(outputs, ("label",)) or "").strip().lower()
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: no question (input.question)")
    if not isinstance(answer, str):
        raise DatasetError(f"{where}: no answer (output.answer)")
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise DatasetError(f"{where}: contexts must be a list of strings")
    if label not in LABELS:
        raise DatasetError(f"{where}: no known label (metadata.label), got {label!r}; use one of {sorted(LABELS)}")
    extra = {k: v for k, v in metadata.items() if k not in ("label", "category", "perturbation", "source_id", "id")}
    return Item(
        id=str(metadata.get("id") or example.get("id")),
        question=question,
        contexts=tuple(contexts),
        answer=answer,
        label=label,
        category=str(metadata.get("category") or "phoenix"),
        perturbation=metadata.get("perturbation"),
        source_id=metadata.get("source_id"),
        extra={
            **extra,
            "phoenix_example_id": example.get("id"),
            "source_span_id": (example.get("source") or {}).get("span_id"),
        },
    )


def _first(data: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((data[k] for k in keys if data.get(k) is not None), None)


__all__ = [
    "DISAGREEMENTS",
    "PushReport",
    "TraceFilter",
    "label_of",
    "load_phoenix_dataset",
    "push_items",
    "push_traces",
]
