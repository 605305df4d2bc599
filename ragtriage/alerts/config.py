"""Alert rules from a TOML file, checked in full when read; the format is in ``docs/alert-rules.md``.

```toml
[defaults]
window_minutes = 15

[[rule]]
type = "metric"
metric = "faithfulness"
threshold = 0.7
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
    failed_sessions_rule,
    share_rule,
    tier_agreement_rule,
)
from ragtriage.config import register_file_check
from ragtriage.errors import RulesFileError
from ragtriage.evaluator.audit import Agreement
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
    session_totals: Callable[[], tuple[int, int]] | None = None,
    agreement: AgreementReader | None = None,
) -> list[Rule]:
    """Rules from a TOML file (or its parsed dict), checked in full: a bad type, range or key raises
    :class:`RulesFileError` naming the file, the rule and the key. The format: ``docs/alert-rules.md``.

    ``budget`` needs ``cost_tracker``; ``dropped`` reads ``drop_counters`` (``(dropped, offered)`` totals)
    and is skipped, with a warning, where nothing drops samples (``ragtriage worker``, offline runs), so one
    rules file serves every role; so are ``failed_sessions`` (it reads ``session_totals``, ``(with a failed
    turn, closed)``) where no sessions are scored, and ``tier_agreement`` (it reads ``agreement``, the
    evaluator's ``audits.snapshot``) where no tier audits."""
    if isinstance(source, dict):
        return _rules(source, thresholds, cost_tracker, drop_counters, session_totals, agreement)
    path = Path(source)
    try:
        return _rules(_read(path), thresholds, cost_tracker, drop_counters, session_totals, agreement)
    except RulesFileError as exc:
        raise RulesFileError(f"{path}: {exc}") from None


def _rules(
    data: dict[str, Any],
    thresholds: RAGEvaluationThresholds | None,
    cost_tracker: CostTracker | None,
    drop_counters: Callable[[], tuple[int, int]] | None,
    session_totals: Callable[[], tuple[int, int]] | None,
    agreement: AgreementReader | None,
) -> list[Rule]:
    _only(data, {"defaults", "rule"}, "top level")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise RulesFileError("[defaults] must be a table")
    _only(defaults, {*_WINDOW_KEYS, *_BUILT_IN_LIMITS}, "[defaults]")
    common = _common(defaults, "[defaults]")
    specs = data.get("rule", [])
    if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
        raise RulesFileError("rule must be an array of tables ([[rule]])")
    limits = {k: defaults[k] for k in _BUILT_IN_LIMITS if k in defaults}
    try:
        if not specs:
            return default_rules(thresholds, **common, **limits)
    except (TypeError, ValueError) as exc:
        raise RulesFileError(f"[defaults]: {exc}") from None
    if limits:
        raise RulesFileError(f"[defaults]: {', '.join(limits)} set the built-in rules' limits: with [[rule]]s, "
                             "set each rule's limit instead")  # fmt: skip
    rules = [
        _rule(spec, i, common, thresholds, cost_tracker, drop_counters, session_totals, agreement)
        for i, spec in enumerate(specs)
    ]
    return [rule for rule in rules if rule is not None]


#: The window and lifecycle keys, in the file's units, and what they become on a rule.
_WINDOW_KEYS = {"window_size": ("window_size", 1), "window_minutes": ("window_s", 60),
                "min_samples": ("min_samples", 1), "cooldown_minutes": ("cooldown_s", 60)}  # fmt: skip
_BUILT_IN_LIMITS = ("heavy_share_limit", "fail_share_limit")


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesFileError(f"cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RulesFileError(f"not valid TOML: {exc}") from None


def _common(table: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (target, scale) in _WINDOW_KEYS.items():
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RulesFileError(f"{where}: {key} must be a number, got {value!r}")
            out[target] = value * scale if scale != 1 else value
    return out


def _rule(
    spec: dict[str, Any],
    index: int,
    common: dict[str, Any],
    thresholds: RAGEvaluationThresholds | None,
    cost_tracker: CostTracker | None,
    drop_counters: Callable[[], tuple[int, int]] | None,
    session_totals: Callable[[], tuple[int, int]] | None,
    agreement: AgreementReader | None,
) -> Rule | None:
    where = f"rule[{index}]"
    kind = spec.get("type")
    settings = {**common, **_common(spec, where)}
    if "name" in spec:
        settings["name"] = spec["name"]
    if "recommendation" in spec:
        settings["recommendation"] = spec["recommendation"]
    known = {"type", "name", "recommendation", *_WINDOW_KEYS}
    try:
        if kind == "metric":
            _only(spec, known | {"metric", "threshold", "quantile"}, where)
            metric = spec.get("metric")
            threshold = spec.get("threshold", getattr(thresholds or RAGEvaluationThresholds(), str(metric), None))
            settings.setdefault("name", f"{metric}_low")
            # MetricRule checks both (a missing one is a TypeError, named in the RulesFileError below)
            quantile = spec.get("quantile")
            return MetricRule(metric=metric, threshold=threshold, quantile=quantile, **settings)  # type: ignore[arg-type]
        if kind in SHARE_KINDS:
            _only(spec, known | {"limit"}, where)
            return share_rule(kind, limit=spec.get("limit"), **settings)
        if kind == "drift":
            _only(spec, known | {"js_limit", "psi_limit", "metric"}, where)
            settings.setdefault("name", "tier_distribution_drift")
            extra = {k: spec[k] for k in ("js_limit", "psi_limit", "metric") if k in spec}
            return TierDriftRule(**extra, **settings)
        if kind == "budget":
            _only(spec, {"type", "limit", "cooldown_minutes"}, where)
            cooldown = {"cooldown_s": settings["cooldown_s"]} if "cooldown_s" in settings else {}
            rule = budget_rule(cost_tracker or CostTracker(), share_limit=spec.get("limit", 0.8), **cooldown)
            if cost_tracker is None:
                raise RulesFileError(f"{where}: a budget rule needs the evaluator's cost tracker")
            return rule
        if kind == "dropped":
            _only(spec, known | {"limit"}, where)
            dropped = dropped_samples_rule(drop_counters or _nothing_dropped, limit=spec.get("limit", 0.05), **settings)
            if drop_counters is None:
                logger.warning("ragtriage: %s (dropped) skipped: this process evaluates but drops no samples", where)
                return None
            return dropped
        if kind == "failed_sessions":
            _only(spec, known | {"limit"}, where)
            read = session_totals or _nothing_dropped
            sessions = failed_sessions_rule(read, limit=spec.get("limit", 0.3), **settings)
            if session_totals is None:
                logger.warning("ragtriage: %s (failed_sessions) skipped: this process scores no sessions", where)
                return None
            return sessions
        if kind == "tier_agreement":
            _only(spec, {"type", "threshold", "min_samples", "cooldown_minutes"}, where)
            lifecycle = {k: settings[k] for k in ("min_samples", "cooldown_s") if k in settings}
            threshold = spec.get("threshold", 0.85)
            agreement_rule = tier_agreement_rule(agreement or _no_audits, threshold=threshold, **lifecycle)
            if agreement is None:
                logger.warning("ragtriage: %s (tier_agreement) skipped: no tier audits in this process", where)
                return None
            return agreement_rule
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RulesFileError):
            raise
        raise RulesFileError(f"{where} ({kind}): {exc}") from None
    raise RulesFileError(
        f"{where}: type must be one of metric, fail_share, heavy_share, judge_errors, drift, budget, dropped, "
        "failed_sessions, tier_agreement; "
        f"got {kind!r}"
    )


def _nothing_dropped() -> tuple[int, int]:
    return 0, 0


def _no_audits() -> dict[str, Agreement]:
    return {}


def _only(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise RulesFileError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
        )


def _check_rules_file(path: str) -> None:
    """Every rule the file makes, with stand-ins for what the running evaluator will give them."""
    load_rules(
        path,
        cost_tracker=CostTracker(),
        drop_counters=_nothing_dropped,
        session_totals=_nothing_dropped,
        agreement=_no_audits,
    )


register_file_check("alert_rules_file", _check_rules_file)
