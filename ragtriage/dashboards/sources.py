"""Evaluation records for the HTML report: from a results JSONL or from a project's annotations in Phoenix.

Both sources become the same flat :class:`EvalRecord`, so the report cannot
tell (and does not care) where an evaluation came from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.export.annotation_configs import AUDIT_VERDICT, HUMAN_VERDICT, TIER, VERDICT
from ragtriage.export.links import ProjectLinks
from ragtriage.export.phoenix import auth_headers, base_url, evaluator_span_id
from ragtriage.metrics_registry import SCORES

_TRACE_ID = re.compile(r"^([0-9a-f]{32})(?:-([0-9a-f]{16}))?$")
_SPAN_CHUNK = 100


@dataclass
class EvalRecord:
    """One evaluation as the report needs it; scores are keyed by their Phoenix annotation name."""

    tier: str
    status: str
    verdict: str
    scores: dict[str, float] = field(default_factory=dict)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    time: datetime | None = None
    trace_id: str | None = None
    span_id: str | None = None
    question: str = ""
    explanation: str = ""
    #: Per metric, the annotation's label (``pass``/``fail``): what that metric alone said of the answer.
    labels: dict[str, str] = field(default_factory=dict)
    #: The auditing tier's verdict on this trace (``audit_verdict``), if it was audited.
    audit_verdict: str | None = None
    #: A reviewer's label (``human_verdict``, annotator kind HUMAN), if someone labelled it.
    human_verdict: str | None = None


def records_from_jsonl(path: str | Path) -> list[EvalRecord]:
    """One ``RAGEvaluationResult.to_dict()`` per line; an optional ``timestamp`` (ISO or epoch s) is kept."""
    records = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                result = RAGEvaluationResult.from_dict(data)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a RAGEvaluationResult JSON object: {exc}") from exc
            if not result.sampled:
                continue
            trace_id, span_id = _ids(result.sample_key)
            records.append(
                EvalRecord(
                    tier=result.tier or "none",
                    status=result.status,
                    verdict=result.verdict,
                    scores=result.scores(SCORES),
                    cost_usd=result.eval_cost_usd,
                    latency_ms=result.eval_latency_ms,
                    time=_time(data.get("timestamp")),
                    trace_id=trace_id,
                    span_id=span_id,
                    question=result.question,
                    explanation="; ".join([*result.notes, *([result.error] if result.error else [])]),
                )
            )
    return records


def records_from_phoenix(
    endpoint: str,
    project: str,
    *,
    api_key: str | None = None,
    limit: int = 5000,
    timeout_s: float = 30.0,
    since: datetime | None = None,
) -> list[EvalRecord]:
    """Read ragtriage's annotations (tier, verdict, scores, ``audit_verdict``) and reviewers' (``human_verdict``,
    annotator kind ``HUMAN``) on a project's root spans, those started ``since`` if given."""
    with httpx.Client(base_url=base_url(endpoint), headers=auth_headers(api_key), timeout=timeout_s) as client:
        roots: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        while len(roots) < limit:
            params: dict[str, Any] = {"parent_id": "null", "limit": min(1000, limit - len(roots))}
            if since is not None:
                params["start_time"] = since.isoformat()
            if cursor:
                params["cursor"] = cursor
            page = _get(client, f"/v1/projects/{project}/spans", params)
            for span in page.get("data", []):
                roots[span["context"]["span_id"]] = span
            cursor = page.get("next_cursor")
            if not cursor:
                break
        annotations: dict[str, dict[str, dict[str, Any]]] = {}
        ids = list(roots)
        for start in range(0, len(ids), _SPAN_CHUNK):
            params = {"span_ids": ids[start : start + _SPAN_CHUNK], "limit": 10_000}
            for row in _get(client, f"/v1/projects/{project}/span_annotations", params).get("data", []):
                if row["name"] == HUMAN_VERDICT and row.get("annotator_kind") != "HUMAN":
                    continue  # only a person's label is a human label
                seen = annotations.setdefault(row["span_id"], {})
                if row["name"] not in seen or str(row.get("updated_at")) > str(seen[row["name"]].get("updated_at")):
                    seen[row["name"]] = row  # several reviewers: the latest label
        judged = _judged_questions(client, project, {sid: roots[sid]["context"]["trace_id"] for sid in annotations})
    records = []
    for span_id, rows in annotations.items():
        tier_row, verdict_row = rows.get(TIER), rows.get(VERDICT)
        if tier_row is None and verdict_row is None:
            continue  # annotated by someone else, not evaluated by ragtriage
        span = roots[span_id]
        meta = (tier_row or verdict_row or {}).get("metadata") or {}
        result = (verdict_row or {}).get("result") or {}
        records.append(
            EvalRecord(
                tier=str(meta.get("tier") or "none"),
                status=str(meta.get("status") or "ok"),
                verdict=str(result.get("label") or "uncertain"),
                scores={
                    name: float(score)
                    for name in SCORES
                    if (score := ((rows.get(name) or {}).get("result") or {}).get("score")) is not None
                },
                cost_usd=float(meta.get("cost_usd") or 0.0),
                latency_ms=float(meta.get("latency_ms") or 0.0),
                time=_time(span.get("start_time")),
                trace_id=span["context"]["trace_id"],
                span_id=span_id,
                question=judged.get(span_id) or _question(span.get("attributes") or {}),
                explanation=str(result.get("explanation") or ""),
                labels={name: str(label) for name in SCORES if (label := _label(rows.get(name))) is not None},
                audit_verdict=_label(rows.get(AUDIT_VERDICT)),
                human_verdict=_label(rows.get(HUMAN_VERDICT)),
            )
        )
    records.sort(key=lambda r: r.time or datetime.min.replace(tzinfo=timezone.utc))
    return records


def _judged_questions(client: httpx.Client, project: str, trace_ids: dict[str, str]) -> dict[str, str]:
    """``{root span id: the question judged}`` from the EVALUATOR spans' ``input.value``: the question ragtriage
    found, which the root span may not hold (an HTTP server span above the chain has no ``input.value``)."""
    evaluated = {f"{evaluator_span_id(f'{trace_id}-{root}'):016x}": root for root, trace_id in trace_ids.items()}
    ids = list(evaluated)
    questions: dict[str, str] = {}
    for start in range(0, len(ids), _SPAN_CHUNK):
        params = {"span_id": ids[start : start + _SPAN_CHUNK], "limit": _SPAN_CHUNK}
        for span in _get(client, f"/v1/projects/{project}/spans", params).get("data", []):
            root = evaluated.get(span["context"]["span_id"])  # a Phoenix that ignores the filter sends others
            if root is not None and (question := _question(span.get("attributes") or {})):
                questions[root] = question
    return questions


def _label(row: dict[str, Any] | None) -> str | None:
    label = ((row or {}).get("result") or {}).get("label")
    return str(label).strip().lower() if label is not None else None


def phoenix_project_url(endpoint: str, project: str, *, api_key: str | None = None) -> str | None:
    """The UI URL of ``project`` (trace links are ``<it>/traces/<trace id>``); None when Phoenix is unreachable."""
    url = base_url(endpoint)
    try:
        response = httpx.get(f"{url}/v1/projects/{project}", headers=auth_headers(api_key), timeout=10.0)
        response.raise_for_status()
        links = ProjectLinks(url, project)
        links.project_id = response.json()["data"]["id"]
        return links.project_url
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def _get(client: httpx.Client, path: str, params: dict[str, Any]) -> dict[str, Any]:
    response = client.get(path, params=params)
    if response.status_code == 404:
        raise LookupError(f"Phoenix at {client.base_url} has no project behind {path}: {response.text[:200]}")
    response.raise_for_status()
    return response.json()


def _ids(sample_key: str | None) -> tuple[str | None, str | None]:
    match = _TRACE_ID.match(sample_key or "")
    return (match.group(1), match.group(2)) if match else (None, None)


def _time(value: object) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _question(attributes: dict[str, Any]) -> str:
    value = attributes.get("input.value") or attributes.get("input", {})
    if isinstance(value, dict):  # Phoenix may nest dotted attributes
        value = value.get("value")
    return value if isinstance(value, str) else ""
