"""Phoenix annotation configs for ragtriage's annotations, registered once per writer and project.

Without a config Phoenix shows ``faithfulness`` as an untyped annotation: it cannot plot it on [0, 1] or offer
the verdict's labels as choices. The configs are built from the metrics registry and the result types, so a
new metric, tier or status gets its config without a second list.

Phoenix's REST API (checked against 20.26.1): ``POST /v1/annotation_configs`` creates a config (names are unique
server-wide; a duplicate answers 409), ``PUT /v1/projects/{project}/annotation_configs/{name}`` attaches it to a
project (idempotent; 404 "Project ... not found" until the project's first span is ingested). A server without the
routes answers 404/405 (or 501); a viewer's key 403. Either is logged once and the annotations are written untyped.

Session annotations get configs too. A config is the project's and applies by name, whatever the annotation is
on: Phoenix 20.26's Sessions views (the sessions table, a session's details, the session annotation summary) read
the project's ``annotationConfigs`` by name to type and colour them, as its trace views do (its UI's
``SessionsTableQuery``, ``SessionDetailsQuery``, ``SessionAnnotationSummaryQuery``).
"""

from __future__ import annotations

import logging
from typing import Any, get_args
from urllib.parse import quote

import httpx

from ragtriage.evaluator.results import TIERS, Status, Verdict
from ragtriage.export.sessions import FAILED_SHARE, JUDGE_ERROR, RESOLVED, RESOLVED_LABELS, TIERS_USED, WORST_TURN
from ragtriage.metrics_registry import BY_NAME, SCORES

logger = logging.getLogger(__name__)

#: Phoenix orders a row's annotations by name (``localeCompare`` in its UI, app/src/components/annotation/
#: AnnotationSummaryGroup.tsx), and the traces list shows as many as fit, then "+N": the verdict's name sorts
#: before every score's (``answer`` < ``answer_quality``), so it is what a reviewer sees first.
VERDICT = "answer"
TIER = "eval_tier"
#: The auditing tier's verdict on an audited trace (docs/audit.md).
AUDIT_VERDICT = "audit_verdict"
#: A reviewer's label, set in the Phoenix UI (annotator kind HUMAN) and read by ``calibrate --from-phoenix``.
HUMAN_VERDICT = "human_verdict"
#: No such route (404, 405, 501: a Phoenix before the API) or no permission (401, 403): not worth retrying.
_UNSUPPORTED = frozenset({404, 405, 501, 401, 403})
#: The verdict's score, so Phoenix's annotation charts plot the judges' pass rate; "uncertain" has none: it is not
#: halfway. Only a judge's verdicts are scored: the free tiers only ever fail (``RAGEvaluationResult.scores``).
VERDICT_SCORES = {"pass": 1.0, "fail": 0.0}


def annotation_configs() -> list[dict[str, Any]]:
    """The config of every annotation the writer puts on a span, trace or session (``POST /v1/annotation_configs``
    bodies). A config belongs to the project and applies by name: Phoenix's Sessions views read the same
    ``annotationConfigs`` as its span and trace views."""
    configs: list[dict[str, Any]] = [
        {
            "name": name,
            "type": "CONTINUOUS",
            "description": f"ragtriage score in [0, 1], higher is better; low: {BY_NAME[name].why} (an LLM "
            "judge's: a free-tier fail carries the score it implies on its answer verdict)",
            "optimization_direction": "MAXIMIZE",
            "lower_bound": 0.0,
            "upper_bound": 1.0,
        }
        for name in SCORES
    ]
    configs.append(
        {
            "name": VERDICT,
            "type": "CATEGORICAL",
            "description": "ragtriage's verdict on the answer; scored when an LLM judge decided (pass 1, fail 0), "
            "labelled only when the free tiers did: they only ever fail, so a mean of their fails would be 0",
            "optimization_direction": "MAXIMIZE",
            "values": [{"label": v, "score": VERDICT_SCORES.get(v)} for v in get_args(Verdict)],
        }
    )
    configs.append(
        {
            "name": AUDIT_VERDICT,
            "type": "CATEGORICAL",
            "description": "the verdict of the tier that audited a cheaper tier's decision (the decision stands)",
            "optimization_direction": "MAXIMIZE",
            "values": [{"label": v, "score": VERDICT_SCORES.get(v)} for v in get_args(Verdict)],
        }
    )
    configs.append(
        {
            "name": HUMAN_VERDICT,
            "type": "CATEGORICAL",
            "description": "a reviewer's label: does the answer hold up against its contexts? (ragtriage calibrate "
            "--from-phoenix measures every tier against it)",
            "optimization_direction": "MAXIMIZE",
            "values": [{"label": label, "score": VERDICT_SCORES[label]} for label in ("pass", "fail")],
        }
    )
    labels = [*TIERS, *(s for s in get_args(Status) if s != "ok")]  # the writer's label: tier, else status
    configs.append(
        {
            "name": TIER,
            "type": "CATEGORICAL",
            "description": "the ragtriage tier that decided, or why none did",
            "optimization_direction": "NONE",
            "values": [{"label": label} for label in labels],
        }
    )
    return configs + session_configs()


def session_configs() -> list[dict[str, Any]]:
    """The configs of a closed session's annotations (:mod:`.sessions`)."""
    return [
        {
            "name": FAILED_SHARE,
            "type": "CONTINUOUS",
            "description": "share of the conversation's turns that failed, in [0, 1]; lower is better",
            "optimization_direction": "MINIMIZE",
            "lower_bound": 0.0,
            "upper_bound": 1.0,
        },
        {
            "name": WORST_TURN,
            "type": "CONTINUOUS",
            "description": "the lowest score an LLM judge gave the conversation's worst turn, in [0, 1] (none when "
            "the free tiers decided it; label: that turn's verdict; the explanation links its trace)",
            "optimization_direction": "MAXIMIZE",
            "lower_bound": 0.0,
            "upper_bound": 1.0,
        },
        {
            "name": TIERS_USED,
            "type": "FREEFORM",
            "description": "how many of the conversation's turns each ragtriage tier decided",
        },
        {
            "name": RESOLVED,
            "type": "CATEGORICAL",
            "description": "the session judge: did the conversation resolve the user's need? (score: its confidence "
            "that it did; judge_error: no verdict, and why)",
            "optimization_direction": "MAXIMIZE",
            "values": [*({"label": k, "score": v} for k, v in RESOLVED_LABELS.items()), {"label": JUDGE_ERROR}],
        },
    ]


class AnnotationConfigs:
    """Registers :func:`annotation_configs` on one project, once; never raises."""

    def __init__(self, project: str) -> None:
        self.project = project
        #: ``pending`` (try at the next write), ``done``, or ``unsupported`` (logged once, never tried again).
        self.state = "pending"
        self._busy = False  # the first writes of a burst register once, not once each
        self._warned = False

    async def ensure(self, client: httpx.AsyncClient) -> None:
        if self.state != "pending" or self._busy:
            return
        self._busy = True
        try:
            self.state = await self._register(client)
        except Exception as exc:  # Phoenix busy or away: the next write tries again; the annotations are in
            self._warn_once("could not register annotation configs (%s); will retry", type(exc).__name__)
        finally:
            self._busy = False

    async def _register(self, client: httpx.AsyncClient) -> str:
        project = quote(self.project, safe="")
        for config in annotation_configs():
            created = await client.post("/v1/annotation_configs", json=config)
            if created.status_code in _UNSUPPORTED:
                return self._unsupported(created)
            if created.status_code not in (200, 409):  # 409: the name exists (another process made it)
                self._warn_once("could not register annotation config %s: HTTP %d", config["name"], created.status_code)
                return "pending"
            attached = await client.put(f"/v1/projects/{project}/annotation_configs/{quote(config['name'], safe='')}")
            if attached.status_code == 404 and "Project" in attached.text:
                return "pending"  # the project's first span is not ingested yet
            if attached.status_code in _UNSUPPORTED:
                return self._unsupported(attached)
            attached.raise_for_status()
        return "done"

    def _unsupported(self, response: httpx.Response) -> str:
        if response.status_code in (401, 403):
            how = "set PHOENIX_API_KEY to a member's or a system key (viewers may not create annotation configs)"
        else:
            how = f"this Phoenix has no {response.request.method} {response.request.url.path}: upgrade Phoenix"
        logger.warning(
            "ragtriage: Phoenix answered HTTP %d to the annotation config API; scores are written as untyped "
            "annotations (%s)",
            response.status_code,
            how,
        )
        return "unsupported"

    def _warn_once(self, message: str, *args: object) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("ragtriage: " + message, *args)
        else:
            logger.debug("ragtriage: " + message, *args)
