"""Session annotations: a closed session's score, written to Phoenix's Sessions view.

Phoenix 20.26 (``phoenix/server/api/routers/v1/sessions.py``): ``POST /v1/session_annotations`` takes rows of
``session_id``, ``name``, ``annotator_kind``, ``result`` (``score``, ``label``, ``explanation``), ``metadata`` and
``identifier``, upserted on (name, session, identifier); with ``sync=true`` it answers 404 "Sessions with IDs ...
do not exist." while the session's spans are not ingested, which the writer waits out as it does for spans.
Links use the UI's own redirects (``/redirects/traces/<trace id>``, ``/redirects/sessions/<session id>``), which
need no project id.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ragtriage.sessions.scorer import SessionScore

FAILED_SHARE = "session_failed_share"
WORST_TURN = "session_worst_turn"
TIERS_USED = "session_tiers"
RESOLVED = "session_resolved"
#: Every annotation a session may get, in the order they are written.
SESSION_ANNOTATIONS = (FAILED_SHARE, WORST_TURN, TIERS_USED, RESOLVED)
#: ``session_resolved``'s labels: the session judge's verdict (the score is its confidence that the need was
#: resolved, so a reviewer's label scores 1 or 0), or why it gave none.
RESOLVED_LABELS = {"resolved": 1.0, "unresolved": 0.0}
JUDGE_ERROR = "judge_error"


def trace_link(base_url: str, trace_id: str) -> str:
    return f"{base_url}/redirects/traces/{quote(trace_id, safe='')}"


def session_link(base_url: str, session_id: str) -> str:
    return f"{base_url}/redirects/sessions/{quote(session_id, safe='')}"


def session_annotations(score: SessionScore, base_url: str) -> list[dict[str, Any]]:
    """The rows of ``POST /v1/session_annotations`` for one closed session. The identifier names the session and
    when its first scored turn came, so writing the same score again replaces it, and a conversation that resumes
    after it was scored gets its later turns scored beside the earlier ones instead of over them."""
    identifier = f"ragtriage:session:{score.session_id}:{int(score.first_seen * 1000)}"  # ms: a first turn's time
    tiers = ", ".join(f"{tier} {n}" for tier, n in sorted(score.tiers.items(), key=lambda kv: -kv[1]))
    metadata = {"turns": score.turns, "failed": score.failed, "errors": score.errors, "cost_usd": score.cost_usd}

    def row(name: str, kind: str, result: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "session_id": score.session_id,
            "name": name,
            "annotator_kind": kind,
            "identifier": identifier,
            "result": result,
            "metadata": {**metadata, **(extra or {})},
        }

    worst = score.worst
    worst_url = trace_link(base_url, str(worst.get("trace_id", "")))
    rows = [
        row(
            FAILED_SHARE,
            "CODE",
            {
                "score": round(score.failed_share, 4),
                "label": f"{score.failed}/{score.turns} failed",
                "explanation": f"{score.failed} of {score.turns} turns failed"
                + (f", {score.errors} without a verdict" if score.errors else "")
                + f"; worst turn: {worst_url}",
            },
        ),
        row(
            WORST_TURN,
            "CODE",
            {
                "score": worst.get("score"),
                "label": str(worst.get("verdict", "")),
                "explanation": f"{worst_url} asked: {worst.get('question', '')}",
            },
            {"trace_id": worst.get("trace_id"), "span_id": worst.get("span_id"), "url": worst_url},
        ),
        row(TIERS_USED, "CODE", {"label": tiers or "none", "explanation": f"turns by deciding tier: {tiers}"},
            {"tiers": score.tiers}),
    ]  # fmt: skip
    if score.resolved is not None:
        rows.append(
            row(
                RESOLVED,
                "LLM",
                {
                    "score": score.resolution_score,
                    "label": "resolved" if score.resolved else "unresolved",
                    "explanation": score.resolution_reason,
                },
            )
        )
    elif score.resolution_error is not None:
        rows.append(row(RESOLVED, "LLM", {"label": JUDGE_ERROR, "explanation": score.resolution_error}))
    return rows
