"""Links into Phoenix's UI that open a project's traces already filtered to the ones in question.

Phoenix's own URL syntax (read from the 20.26.1 UI's routes): ``/projects/<project GlobalID>/traces`` with the
query parameters ``traceFilterCondition`` (its trace filter DSL, e.g.
``trace_annotations['answer'].label == 'fail'``) and ``timeRangeStart``/``timeRangeEnd`` (ISO 8601; traces
whose root span starts in [start, end)). The UI needs the project's GlobalID, not its name:
``/redirects/projects/<name>`` resolves a name but drops the query string, so it is only the fallback while the
id is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

import httpx

from ragtriage.alerts.rules import SHARE_KINDS, MetricRule, Rule, ShareRule
from ragtriage.export.annotation_configs import TIER, VERDICT

#: Evaluations lag their traces (the trace ends, then it is queued and judged): an alert's range starts this much
#: before the first evaluation in its window.
EVALUATION_LAG_S = 300.0


def label_is(name: str, label: str) -> str:
    return f"trace_annotations[{name!r}].label == {label!r}"


def score_below(name: str, threshold: float) -> str:
    return f"trace_annotations[{name!r}].score < {threshold!r}"


FAILING = label_is(VERDICT, "fail")
_SHARE_FILTERS = {
    SHARE_KINDS["fail_share"].what: FAILING,
    SHARE_KINDS["heavy_share"].what: label_is(TIER, "heavy"),
    SHARE_KINDS["judge_errors"].what: label_is(TIER, "judge_error"),
}


def rule_filter(rule: Rule) -> str | None:
    """The traces an alert is about: below the rule's threshold, or matching its share; None: all of the window's."""
    if isinstance(rule, MetricRule):
        return score_below(rule.metric, rule.threshold)
    if isinstance(rule, ShareRule):
        return _SHARE_FILTERS.get(rule.what)
    return None


def traces_url(
    project_url: str, condition: str | None, start: datetime | None = None, end: datetime | None = None
) -> str:
    """``project_url`` (``<base>/projects/<id>``) opened on its traces tab, filtered and limited to [start, end)."""
    params = {}
    if condition:
        params["traceFilterCondition"] = condition
    if start is not None:
        params["timeRangeStart"] = _iso(start.timestamp(), math.floor)
    if end is not None:
        params["timeRangeEnd"] = _iso(end.timestamp(), math.ceil)
    return f"{project_url}/traces" + (f"?{urlencode(params, quote_via=quote)}" if params else "")


def _iso(seconds: float, rounding: Callable[[float], int]) -> str:
    """Whole seconds, rounded outwards so the range never loses its first or last trace."""
    return datetime.fromtimestamp(rounding(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProjectLinks:
    """Links into one Phoenix project; :attr:`project_id` is filled in by the writer once Phoenix has the project."""

    def __init__(self, base_url: str, project: str) -> None:
        self.base_url = base_url
        self.project = project
        self.project_id: str | None = None

    @property
    def project_url(self) -> str:
        if self.project_id is None:
            return f"{self.base_url}/redirects/projects/{quote(self.project, safe='')}"
        return f"{self.base_url}/projects/{self.project_id}"

    def for_alert(self, rule: Rule, since: float, until: float) -> str:
        """The traces of an alert's window (evaluated from ``since`` to ``until``, epoch seconds) it is about."""
        if self.project_id is None:
            return self.project_url  # the project, unfiltered: better than no link
        start = datetime.fromtimestamp(since - EVALUATION_LAG_S, tz=timezone.utc)
        end = datetime.fromtimestamp(until + 1, tz=timezone.utc)
        return traces_url(self.project_url, rule_filter(rule), start, end)

    async def resolve(self, client: httpx.AsyncClient) -> None:
        """Look up the project's GlobalID (``GET /v1/projects/{name}``); leaves it unknown on any failure."""
        if self.project_id is not None:
            return
        try:
            response = await client.get(f"/v1/projects/{quote(self.project, safe='')}")
            if response.status_code == 200:
                self.project_id = response.json()["data"]["id"]
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            pass
