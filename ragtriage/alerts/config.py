"""Alert rules from a TOML file.

```toml
[defaults]                 # apply to every rule below (and to the built-in rules)
window_size = 200          # results
window_minutes = 15
min_samples = 20
cooldown_minutes = 30

[[rule]]
type = "heavy_share"  # metric | fail_share | heavy_share | judge_errors | drift | budget | dropped | tier_agreement
limit = 0.3

[[rule]]
type = "metric"
metric = "faithfulness"
threshold = 0.7
quantile = 0.1             # optional: the 10th percentile instead of the mean

[[rule]]
type = "tier_agreement"    # a cheaper tier vs its auditor (audit samples); added with defaults when absent
threshold = 0.85
min_samples = 30
```

Without any ``[[rule]]`` table, the built-in rules run with the defaults given.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragtriage.alerts.rules import (
    SHARE_KINDS,
    AgreementReader,
    MetricRule,
    Rule,
    TierDriftRule,
    budget_rule,
    default_rules,
    dropped_samples_rule,
    share_rule,
    tier_agreement_rule,
)
from ragtriage.errors import RulesFileError
from ragtriage.evaluator.cost import CostTracker
from ragtriage.evaluator.results import RAGEvaluationThresholds

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


logger = logging.getLogger(__name__)


def load_rules(
    source: str | Path | dict[str, Any],
    *,
    thresholds: RAGEvaluationThresholds | None = None,
    cost_tracker: CostTracker | None = None,
    drop_counters: Callable[[], tuple[int, int]] | None = None,
    agreement: AgreementReader | None = None,
) -> list[Rule]:
    """Rules from a TOML file (or its parsed dict). ``budget`` needs ``cost_tracker``; ``dropped`` reads
    ``drop_counters`` (``(dropped, offered)`` totals) and ``tier_agreement`` reads ``agreement`` (the evaluator's
    ``audits.snapshot``); each is skipped, with a warning, where there is nothing to read (no sample dropped, no
    tier audits), so one rules file serves every role."""
    data = source if isinstance(source, dict) else _read(Path(source))
    defaults = data.get("defaults", {})
    common = _common(defaults, "defaults")
    specs = data.get("rule", [])
    if not isinstance(specs, list):
        raise RulesFileError("[[rule]] must be an array of tables")
    if not specs:
        limits = {k: defaults[k] for k in ("heavy_share_limit", "fail_share_limit") if k in defaults}
        return default_rules(thresholds, **common, **limits)
    rules = [_rule(spec, i, common, thresholds, cost_tracker, drop_counters, agreement) for i, spec in enumerate(specs)]
    return [rule for rule in rules if rule is not None]


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RulesFileError(f"{path}: not valid TOML: {exc}") from None


def _common(table: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, target, scale in (
        ("window_size", "window_size", None),
        ("window_minutes", "window_s", 60),
        ("min_samples", "min_samples", None),
        ("cooldown_minutes", "cooldown_s", 60),
    ):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RulesFileError(f"{where}: {key} must be a number, got {value!r}")
            out[target] = value * scale if scale else value
    return out


def _rule(
    spec: dict[str, Any],
    index: int,
    common: dict[str, Any],
    thresholds: RAGEvaluationThresholds | None,
    cost_tracker: CostTracker | None,
    drop_counters: Callable[[], tuple[int, int]] | None,
    agreement: AgreementReader | None,
) -> Rule | None:
    where = f"rule[{index}]"
    kind = spec.get("type")
    settings = {**common, **_common(spec, where)}
    if "name" in spec:
        settings["name"] = spec["name"]
    if "recommendation" in spec:
        settings["recommendation"] = spec["recommendation"]
    known = {"type", "name", "recommendation", "window_size", "window_minutes", "min_samples", "cooldown_minutes"}
    try:
        if kind == "metric":
            _only(spec, known | {"metric", "threshold", "quantile"}, where)
            metric = spec.get("metric")
            threshold = spec.get("threshold", getattr(thresholds or RAGEvaluationThresholds(), str(metric), None))
            settings.setdefault("name", f"{metric}_low")
            return MetricRule(metric=metric, threshold=threshold, quantile=spec.get("quantile"), **settings)
        if kind in SHARE_KINDS:
            _only(spec, known | {"limit"}, where)
            return share_rule(kind, limit=spec.get("limit"), **settings)
        if kind == "drift":
            _only(spec, known | {"js_limit", "psi_limit", "metric"}, where)
            settings.setdefault("name", "tier_distribution_drift")
            extra = {k: spec[k] for k in ("js_limit", "psi_limit", "metric") if k in spec}
            return TierDriftRule(**extra, **settings)
        if kind == "budget":
            _only(spec, known | {"limit"}, where)
            if cost_tracker is None:
                raise RulesFileError(f"{where}: a budget rule needs the evaluator's cost tracker")
            return budget_rule(cost_tracker, share_limit=spec.get("limit", 0.8))
        if kind == "dropped":
            _only(spec, known | {"limit"}, where)
            if drop_counters is None:
                logger.warning("ragtriage: %s (dropped) skipped: this process evaluates but drops no samples", where)
                return None
            return dropped_samples_rule(drop_counters, limit=spec.get("limit", 0.05), **settings)
        if kind == "tier_agreement":
            _only(spec, known | {"threshold"}, where)
            if agreement is None:
                logger.warning("ragtriage: %s (tier_agreement) skipped: no tier audits in this process", where)
                return None
            extra = {k: settings[k] for k in ("min_samples", "cooldown_s") if k in settings}
            return tier_agreement_rule(agreement, threshold=spec.get("threshold", 0.85), **extra)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RulesFileError):
            raise
        raise RulesFileError(f"{where} ({kind}): {exc}") from None
    raise RulesFileError(
        f"{where}: type must be one of metric, fail_share, heavy_share, judge_errors, drift, budget, dropped, "
        "tier_agreement; "
        f"got {kind!r}"
    )


def _only(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise RulesFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
