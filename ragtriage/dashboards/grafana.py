"""The "Eval Vector Distribution" Grafana dashboard, generated from the metric specs.

Every PromQL name comes from :func:`prometheus_names`, so the dashboard cannot
drift from what ragtriage emits (the tests check it against a real scrape).
"""

from __future__ import annotations

import json
from typing import Any

from ragtriage.dashboards.prometheus import prometheus_names
from ragtriage.metrics_registry import ALL

TITLE = "Eval Vector Distribution"
UID = "ragtriage-eval-vectors"
DEFAULT_HEAVY_SHARE_LIMIT = 0.30
_DS = {"type": "prometheus", "uid": "${datasource}"}
_RATE = "[$__rate_interval]"
_TIER_COLORS = {"cache": "blue", "deterministic": "green", "local": "yellow", "heavy": "red", "none": "purple"}


def grafana_dashboard(*, heavy_share_limit: float = DEFAULT_HEAVY_SHARE_LIMIT) -> dict[str, Any]:
    """The dashboard model (import it in Grafana: Dashboards -> New -> Import)."""
    if isinstance(heavy_share_limit, bool) or not isinstance(heavy_share_limit, int | float):
        raise TypeError(f"heavy_share_limit must be a number, got {heavy_share_limit!r}")
    if not 0.0 < heavy_share_limit <= 1.0:
        raise ValueError(f"heavy_share_limit must be in (0, 1], got {heavy_share_limit!r}")
    n = prometheus_names()
    evals = n["ragtriage.eval.evaluations"]
    score = n["ragtriage.eval.score"]
    tier_duration = n["ragtriage.eval.tier.duration"]
    cost = n["ragtriage.eval.cost"]
    cache = n["ragtriage.eval.cache.lookups"]
    sessions = n["ragtriage.eval.sessions"]
    failed_share = n["ragtriage.eval.session.failed_share"]
    agreement = n["ragtriage.eval.tier_agreement"]
    audits = n["ragtriage.eval.audits"]
    panels = [
        _timeseries(
            "Tier mix (share of evaluations by deciding tier)",
            [_target(f"sum by (tier) (rate({evals}{_RATE}))", "{{tier}}")],
            unit="percentunit",
            stacking="percent",
            overrides=[_color_override(t, c) for t, c in _TIER_COLORS.items()],
            pos=(0, 0, 12, 9),
        ),
        _timeseries(
            f"Heavy-vector share (alert above {heavy_share_limit:.0%})",
            [
                _target(
                    f'sum(rate({evals}{{tier="heavy"}}{_RATE})) / sum(rate({evals}{{tier!="none"}}{_RATE}))',
                    "heavy share",
                ),
                _target(f"max({n['ragtriage.eval.heavy_share']})", "heavy share, recent window", ref="B"),
            ],
            unit="percentunit",
            thresholds=[("green", None), ("red", heavy_share_limit)],
            extra_custom={"thresholdsStyle": {"mode": "line+area"}},
            minmax=(0, 1),
            pos=(12, 0, 12, 9),
        ),
        {
            "type": "heatmap",
            "title": "Score distribution ($metric)",
            "datasource": _DS,
            "gridPos": _grid(0, 9, 12, 9),
            "targets": [
                {
                    **_target(f'sum by (le) (increase({score}_bucket{{metric=~"$metric"}}[$__interval]))', "{{le}}"),
                    "format": "heatmap",
                }
            ],
            "options": {"calculate": False, "yAxis": {"unit": "none"}, "color": {"scheme": "Oranges"}},
        },
        _timeseries(
            "Mean score by metric",
            [
                _target(
                    f'sum by (metric) (rate({score}_sum{{metric=~"$metric"}}{_RATE}))'
                    f' / sum by (metric) (rate({score}_count{{metric=~"$metric"}}{_RATE}))',
                    "{{metric}}",
                )
            ],
            unit="none",
            pos=(12, 9, 12, 9),
        ),
        _timeseries(
            "Cost per evaluated query (USD)",
            [_target(f"sum(rate({cost}{_RATE})) / sum(rate({evals}{_RATE}))", "USD / evaluation")],
            unit="currencyUSD",
            pos=(0, 18, 8, 8),
        ),
        _timeseries(
            "Judge spend by tier (USD per hour)",
            [_target(f"sum by (tier) (rate({cost}{_RATE})) * 3600", "{{tier}}")],
            unit="currencyUSD",
            stacking="normal",
            pos=(8, 18, 8, 8),
        ),
        _timeseries(
            "p95 latency per tier",
            [
                _target(
                    f"histogram_quantile(0.95, sum by (le, tier) (rate({tier_duration}_bucket{_RATE})))",
                    "{{tier}}",
                ),
                _target(
                    f"histogram_quantile(0.95, sum by (le) (rate({n['ragtriage.eval.duration']}_bucket{_RATE})))",
                    "whole evaluation",
                    ref="B",
                ),
            ],
            unit="s",
            pos=(16, 18, 8, 8),
        ),
        _timeseries(
            "Alerts fired",
            [
                _target(
                    f"sum by (rule, severity) (increase({n['ragtriage.eval.alerts']}[$__interval]))",
                    "{{rule}} ({{severity}})",
                )
            ],
            unit="short",
            draw="bars",
            pos=(0, 26, 8, 8),
        ),
        _timeseries(
            "Verdicts",
            [_target(f"sum by (verdict) (rate({evals}{_RATE}))", "{{verdict}}")],
            unit="reqps",
            stacking="normal",
            pos=(8, 26, 8, 8),
        ),
        _timeseries(
            "Cache hit ratio, drops, judge errors, retries, traces not evaluated",
            [
                _target(
                    f'sum(rate({cache}{{result="hit"}}{_RATE})) / sum(rate({cache}{{result=~"hit|miss"}}{_RATE}))',
                    "cache hit ratio",
                ),
                _target(
                    f"sum by (reason) (rate({n['ragtriage.eval.samples.dropped']}{_RATE}))",
                    "dropped: {{reason}}",
                    ref="B",
                ),
                _target(
                    f"sum by (tier) (rate({n['ragtriage.eval.judge.errors']}{_RATE}))",
                    "judge errors: {{tier}}",
                    ref="C",
                ),
                _target(
                    f"sum by (tier) (rate({n['ragtriage.eval.judge.retries']}{_RATE}))", "retries: {{tier}}", ref="D"
                ),
                _target(
                    f'sum by (reason) (rate({n["ragtriage.eval.traces.skipped"]}{{reason!="not_sampled"}}{_RATE}))',
                    "not evaluated: {{reason}}",
                    ref="E",
                ),
                _target(
                    f'sum by (server) (rate({n["ragtriage.eval.judge.server.requests"]}{{outcome="error"}}{_RATE}))',
                    "judge server errors: {{server}}",
                    ref="F",
                ),
            ],
            unit="short",
            pos=(16, 26, 8, 8),
        ),
        _timeseries(
            "Sessions: share with a failed turn, mean share of turns failed",
            [
                _target(
                    f'sum(rate({sessions}{{outcome="failed_turns"}}{_RATE})) / sum(rate({sessions}{_RATE}))',
                    "sessions with a failed turn",
                ),
                _target(
                    f"sum(rate({failed_share}_sum{_RATE})) / sum(rate({failed_share}_count{_RATE}))",
                    "mean share of turns failed",
                    ref="B",
                ),
            ],
            unit="percentunit",
            minmax=(0, 1),
            pos=(0, 34, 12, 8),
        ),
        _timeseries(
            "Sessions closed",
            [_target(f"sum by (outcome) (rate({sessions}{_RATE}))", "{{outcome}}")],
            unit="short",
            stacking="normal",
            pos=(12, 34, 12, 8),
        ),
        _timeseries(
            "Tier agreement with its auditor (audit samples; band: 95% interval)",
            [
                _target(f'max by (tier) ({agreement}{{stat="agreement", bound="value"}})', "{{tier}} agreement"),
                _target(f'max by (tier) ({agreement}{{stat="agreement", bound="low"}})', "{{tier}} low", ref="B"),
                _target(f'max by (tier) ({agreement}{{stat="agreement", bound="high"}})', "{{tier}} high", ref="C"),
                _target(
                    f'max by (tier) ({agreement}{{stat="fail_precision", bound="value"}})',
                    "{{tier}} precision of fail",
                    ref="D",
                ),
            ],
            unit="percentunit",
            minmax=(0, 1),
            pos=(0, 42, 12, 8),
        ),
        _timeseries(
            "Audits by outcome",
            [_target(f"sum by (tier, outcome) (increase({audits}[$__interval]))", "{{tier}}: {{outcome}}")],
            unit="short",
            draw="bars",
            stacking="normal",
            pos=(12, 42, 12, 8),
        ),
    ]
    for i, panel in enumerate(panels, start=1):
        panel["id"] = i
    return {
        "title": TITLE,
        "uid": UID,
        "tags": ["ragtriage", "rag", "evaluation"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                {
                    "name": "metric",
                    "label": "Score",
                    "type": "custom",
                    "query": ",".join(ALL),
                    "multi": True,
                    "includeAll": True,
                    "current": {"text": "faithfulness", "value": "faithfulness"},
                    "options": [],
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json(*, heavy_share_limit: float = DEFAULT_HEAVY_SHARE_LIMIT) -> str:
    """The dashboard as indented JSON text."""
    return json.dumps(grafana_dashboard(heavy_share_limit=heavy_share_limit), indent=2) + "\n"


def _grid(x: int, y: int, w: int, h: int) -> dict[str, int]:
    return {"x": x, "y": y, "w": w, "h": h}


def _target(expr: str, legend: str, *, ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": _DS, "expr": expr, "legendFormat": legend, "range": True}


def _color_override(series: str, color: str) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": series},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
    }


def _timeseries(
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    pos: tuple[int, int, int, int],
    stacking: str = "none",
    draw: str = "line",
    thresholds: list[tuple[str, float | None]] | None = None,
    extra_custom: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    minmax: tuple[float, float] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": draw,
        "fillOpacity": 60 if stacking != "none" else 10,
        "stacking": {"mode": stacking, "group": "A"},
        "lineWidth": 1,
        "showPoints": "never",
        **(extra_custom or {}),
    }
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if thresholds is not None:
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in thresholds]}
    if minmax is not None:
        defaults["min"], defaults["max"] = minmax
    return {
        "type": "timeseries",
        "title": title,
        "datasource": _DS,
        "gridPos": _grid(*pos),
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }
