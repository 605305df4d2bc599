"""Configuration: one frozen dataclass, every field with an environment variable.

Explicit arguments win over the environment. A bad explicit argument raises
``ValueError`` at once, naming it; a bad environment value is logged and the
default is used, so a typo in a deployment never takes the app down.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ragtriage._log_hygiene import redact

logger = logging.getLogger(__name__)


def _env(name: str, **meta: Any) -> Any:
    return {"env": name, **meta}


@dataclass(frozen=True, slots=True)
class Config:
    """Everything :func:`ragtriage.instrument` reads. Field metadata names each env var."""

    sample_rate: float = field(default=0.1, metadata=_env("RAGTRIAGE_SAMPLE_RATE", unit=True))
    endpoint: str = field(default="http://localhost:6006", metadata=_env("PHOENIX_COLLECTOR_ENDPOINT"))
    project_name: str = field(default="default", metadata=_env("PHOENIX_PROJECT_NAME"))
    phoenix_api_key: str | None = field(default=None, metadata=_env("PHOENIX_API_KEY", secret=True))
    write_back: bool = field(default=True, metadata=_env("RAGTRIAGE_WRITE_BACK"))
    #: One vLLM server or a fleet: a URL or a list in code, comma-separated in the environment; kept as a tuple.
    local_judge_url: tuple[str, ...] | None = field(default=None, metadata=_env("RAGTRIAGE_LOCAL_JUDGE_URL"))
    local_judge_model: str = field(
        default="meta-llama/Llama-3.1-8B-Instruct", metadata=_env("RAGTRIAGE_LOCAL_JUDGE_MODEL")
    )
    openai_api_key: str | None = field(default=None, metadata=_env("OPENAI_API_KEY", secret=True))
    heavy_judge_url: str | None = field(default=None, metadata=_env("RAGTRIAGE_HEAVY_JUDGE_URL"))
    heavy_judge_model: str = field(default="gpt-4o-mini", metadata=_env("RAGTRIAGE_HEAVY_JUDGE_MODEL"))
    #: USD per 1M tokens; unset: the heavy model's published prices (ragtriage/judges/pricing.py), 0 if unlisted.
    heavy_input_usd_per_1m: float | None = field(default=None, metadata=_env("RAGTRIAGE_HEAVY_INPUT_USD_PER_1M"))
    heavy_output_usd_per_1m: float | None = field(default=None, metadata=_env("RAGTRIAGE_HEAVY_OUTPUT_USD_PER_1M"))
    confidence_threshold: float = field(default=0.7, metadata=_env("RAGTRIAGE_CONFIDENCE_THRESHOLD", unit=True))
    budget_usd_per_hour: float | None = field(default=None, metadata=_env("RAGTRIAGE_BUDGET_USD_PER_HOUR"))
    redis_url: str | None = field(default=None, metadata=_env("RAGTRIAGE_REDIS_URL", secret=True))
    max_queue_size: int = field(default=2048, metadata=_env("RAGTRIAGE_MAX_QUEUE_SIZE"))
    max_traces_in_flight: int = field(default=10_000, metadata=_env("RAGTRIAGE_MAX_TRACES_IN_FLIGHT"))
    max_spans_per_trace: int = field(default=256, metadata=_env("RAGTRIAGE_MAX_SPANS_PER_TRACE"))
    trace_ttl_s: float = field(default=300.0, metadata=_env("RAGTRIAGE_TRACE_TTL_S"))
    max_concurrency: int = field(default=8, metadata=_env("RAGTRIAGE_MAX_CONCURRENCY"))
    #: Read (and checked) when the configuration is made, so a broken file is found at start-up.
    calibration_file: str | None = field(
        default=None, metadata=_env("RAGTRIAGE_CALIBRATION_FILE", file=True, unset="the uncalibrated thresholds")
    )
    alert_rules_file: str | None = field(
        default=None, metadata=_env("RAGTRIAGE_ALERT_RULES_FILE", file=True, unset="the built-in alert rules")
    )
    #: Where samples are evaluated: a background thread, a child process, or ``ragtriage worker``s behind a queue.
    evaluate_in: str = field(
        default="thread", metadata=_env("RAGTRIAGE_EVALUATE_IN", choices=("thread", "process", "queue"))
    )
    #: The Redis Stream that ``evaluate_in="queue"`` publishes to (and ``ragtriage worker`` consumes).
    queue_url: str | None = field(default=None, metadata=_env("RAGTRIAGE_QUEUE_URL", secret=True))
    #: ``ragtriage collect``: a trace whose root arrived is complete after this long without a new span. Longer than
    #: the exporters' batch delay (``OTEL_BSP_SCHEDULE_DELAY``, 5 s in the OTel SDKs), or a late service is missed.
    collector_quiet_s: float = field(default=6.0, metadata=_env("RAGTRIAGE_COLLECTOR_QUIET_S"))
    #: ``ragtriage collect``: requests waiting to be forwarded, at most (then it answers 503, retry later).
    forward_buffer_mb: int = field(default=64, metadata=_env("RAGTRIAGE_FORWARD_BUFFER_MB"))
    #: ``ragtriage collect``: the bearer tokens senders must present (comma-separated in the environment); unset: no
    #: authentication, for a collector on loopback or behind a gateway that authenticates.
    collector_tokens: tuple[str, ...] | None = field(
        default=None, metadata=_env("RAGTRIAGE_COLLECTOR_TOKENS", secret=True)
    )
    #: ``ragtriage collect``: sampled traces a minute each sender (token) may have judged; the rest are forwarded only.
    collector_traces_per_minute: int | None = field(
        default=None, metadata=_env("RAGTRIAGE_COLLECTOR_TRACES_PER_MINUTE")
    )
    #: The address Prometheus ``/metrics`` listens on (``--metrics-port``, ``metrics_port=``); ``0.0.0.0`` opens it up.
    metrics_host: str = field(default="127.0.0.1", metadata=_env("RAGTRIAGE_METRICS_HOST"))
    #: Keep (and log on ``ragtriage.explain``) why each of the last N completed traces was or was not evaluated.
    explain_traces: int | None = field(default=None, metadata=_env("RAGTRIAGE_EXPLAIN_TRACES"))
    #: The interpreter of the evaluator process (default: ``sys.executable``, which under uWSGI is not Python).
    evaluator_python: str | None = field(default=None, metadata=_env("RAGTRIAGE_EVALUATOR_PYTHON"))

    # Alert sinks: each is configured when its first field is set.
    slack_webhook_url: str | None = field(default=None, metadata=_env("RAGTRIAGE_SLACK_WEBHOOK_URL", secret=True))
    pagerduty_routing_key: str | None = field(
        default=None, metadata=_env("RAGTRIAGE_PAGERDUTY_ROUTING_KEY", secret=True)
    )
    pagerduty_url: str = field(
        default="https://events.pagerduty.com/v2/enqueue", metadata=_env("RAGTRIAGE_PAGERDUTY_URL")
    )
    alert_webhook_url: str | None = field(default=None, metadata=_env("RAGTRIAGE_ALERT_WEBHOOK_URL", secret=True))
    smtp_host: str | None = field(default=None, metadata=_env("RAGTRIAGE_SMTP_HOST"))
    smtp_port: int = field(default=587, metadata=_env("RAGTRIAGE_SMTP_PORT"))
    smtp_from: str | None = field(default=None, metadata=_env("RAGTRIAGE_SMTP_FROM"))
    #: Comma-separated recipients.
    smtp_to: str | None = field(default=None, metadata=_env("RAGTRIAGE_SMTP_TO"))
    smtp_username: str | None = field(default=None, metadata=_env("RAGTRIAGE_SMTP_USERNAME"))
    smtp_password: str | None = field(default=None, metadata=_env("RAGTRIAGE_SMTP_PASSWORD", secret=True))
    smtp_starttls: bool = field(default=True, metadata=_env("RAGTRIAGE_SMTP_STARTTLS"))
    #: Conversations: how many of the last turns before a question every tier reads, and their characters at most.
    max_history_turns: int = field(default=6, metadata=_env("RAGTRIAGE_MAX_HISTORY_TURNS"))
    max_history_chars: int = field(default=4000, metadata=_env("RAGTRIAGE_MAX_HISTORY_CHARS"))
    #: A session (traces sharing ``session.id``) with no new turn for this long is closed and scored in Phoenix.
    session_idle_s: float = field(default=300.0, metadata=_env("RAGTRIAGE_SESSION_IDLE_S"))
    #: One judge call per closed session on whether it resolved the user's need (counted in cost). Off by default.
    session_judge: bool = field(default=False, metadata=_env("RAGTRIAGE_SESSION_JUDGE"))
    #: Share of the cheaper tiers' decisions (a free-tier fail, a confident local judge) judged again by the tier
    #: above, in the background, to measure their agreement (docs/audit.md). 0.05: one auditing-tier call per 20
    #: cheap decisions, and ~200 audits (a 95% interval of at most +-7 points) in every 4,000 of them.
    audit_rate: float = field(default=0.05, metadata=_env("RAGTRIAGE_AUDIT_RATE", unit=True))

    #: More headers for Phoenix, ``name=value`` pairs (comma-separated in the environment, as phoenix.otel reads it);
    #: ``instrument()`` takes them from ``phoenix.otel.register()``'s exporter unless set.
    phoenix_client_headers: tuple[str, ...] | None = field(
        default=None, metadata=_env("PHOENIX_CLIENT_HEADERS", secret=True)
    )
    #: At interpreter exit, wait this long for queued evaluations (and their write-back), then for the sessions
    #: still open in memory to be written, before dropping the rest; ``shutdown()`` gives those sessions as long.
    exit_flush_timeout_s: float = field(default=5.0, metadata=_env("RAGTRIAGE_EXIT_FLUSH_TIMEOUT_S"))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if str(f.type).startswith("tuple") and isinstance(value, str | list):
                object.__setattr__(self, f.name, _parse(value, f.type) if isinstance(value, str) else tuple(value))
            problem = _problem(f.name, getattr(self, f.name), f.type, f.metadata)
            if problem:
                raise ValueError(f"{f.name} {problem}")
        if contradiction := _contradiction(self.evaluate_in, self.queue_url):
            raise ValueError(contradiction)

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        """Explicit ``overrides`` (``None`` means "not given"), then env vars, then defaults."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(overrides) - set(known)
        if unknown:
            raise TypeError(f"unknown configuration argument(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            if overrides.get(name) is not None:
                values[name] = overrides[name]
                continue
            value, problem = _from_env(f)
            if problem:
                shown = "<secret>" if f.metadata.get("secret") else repr(os.environ[f.metadata["env"]])
                default = f.metadata.get("unset") or repr(f.default if f.default is not MISSING else None)
                logger.warning("ragtriage: ignoring %s=%s (%s); using %s", f.metadata["env"], shown, problem, default)
            elif value is not MISSING:
                values[name] = value
        if contradiction := _contradiction(values.get("evaluate_in", "thread"), values.get("queue_url")):
            explicit = {n: overrides[n] for n in ("evaluate_in", "queue_url") if overrides.get(n) is not None}
            if problem := _contradiction(explicit.get("evaluate_in", "thread"), explicit.get("queue_url")):
                raise ValueError(problem)  # the code itself contradicts itself
            # The environment contradicts the code or itself: a deployment setting must never stop the app.
            logger.warning("ragtriage: %s; the environment's value is ignored", contradiction)
            for name in ("evaluate_in", "queue_url"):
                values.pop(name, None)
            values.update(explicit)
        return cls(**values)

    @classmethod
    def env_problems(cls) -> dict[str, str]:
        """What :meth:`from_env` ignores: ``{field name: "VARIABLE: why"}`` for each bad variable set (e.g. for
        ``ragtriage alerts test`` to fail on a sink the environment names but cannot have)."""
        problems = {}
        for f in fields(cls):
            _, problem = _from_env(f)
            if problem:
                problems[f.name] = f"{f.metadata['env']}: {problem}"
        return problems

    @classmethod
    def in_env(cls, name: str) -> bool:
        """Whether the environment sets field ``name`` (e.g. the demo starts its own Phoenix unless it does)."""
        known = {f.name: f for f in fields(cls)}
        if name not in known:
            raise ValueError(f"no such setting: {name!r}")
        return bool(os.environ.get(known[name].metadata["env"]))

    def to_env(self) -> dict[str, str]:
        """The set fields as environment variables: what a child process's ``from_env()`` reads back."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                env[f.metadata["env"]] = ",".join(value)
            elif value is not None:
                env[f.metadata["env"]] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def __repr__(self) -> str:
        return f"Config({', '.join(f'{f.name}={_shown(getattr(self, f.name), f.metadata)}' for f in fields(self))})"


def _shown(value: Any, meta: Any) -> str:
    """A field as ``repr`` may show it: secrets as ``<set>``, a URL without the password it may carry."""
    if meta.get("secret") and value:
        return "<set>"
    if isinstance(value, tuple):
        return repr(tuple(redact(v) if isinstance(v, str) and "://" in v else v for v in value))
    return repr(redact(value) if isinstance(value, str) and "://" in value else value)


def _from_env(f: Any) -> tuple[Any, str | None]:
    """A field's value from its environment variable (``MISSING`` when unset), or what is wrong with it."""
    raw = os.environ.get(f.metadata["env"])
    if raw is None or raw == "":
        return MISSING, None
    try:
        value = _parse(raw, f.type)
        return value, _problem(f.name, value, f.type, f.metadata)
    except ValueError as exc:
        return MISSING, str(exc)


def _contradiction(evaluate_in: str, queue_url: str | None) -> str | None:
    """The one pair of settings that can contradict each other: where evaluation runs, and the queue URL."""
    if evaluate_in == "queue" and not queue_url:
        return "evaluate_in='queue' needs queue_url (RAGTRIAGE_QUEUE_URL), the Redis Stream to publish to"
    if queue_url and evaluate_in != "queue":
        return f"queue_url is set but evaluate_in={evaluate_in!r}: set evaluate_in='queue' to evaluate in workers"
    return None


def _parse(raw: str, type_: Any) -> Any:
    text = str(type_)
    if "bool" in text:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("is not a boolean")
    if text.startswith("int"):
        return int(raw)
    if "float" in text:
        return float(raw)
    if text.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw.strip()


def _problem(name: str, value: Any, type_: Any, meta: Any) -> str | None:
    text = str(type_)
    shown = "<secret>" if meta.get("secret") else repr(value)  # an error message must not echo a secret
    if value is None:
        return None if "None" in text else "must be set"
    if "bool" in text:
        return None if isinstance(value, bool) else f"must be a bool, got {shown}"
    if isinstance(value, bool):
        return f"must be a number, got {shown}"
    if text.startswith("int"):
        if not isinstance(value, int) or value < 1:
            return f"must be a positive int, got {shown}"
    elif "float" in text:
        if not isinstance(value, int | float) or value != value or value < 0:
            return f"must be a number >= 0, got {shown}"
        if meta.get("unit") and value > 1:
            return f"must be in [0, 1], got {shown}"
    elif text.startswith("tuple"):
        if not isinstance(value, tuple) or not value or not all(isinstance(v, str) and v for v in value):
            return f"must be a non-empty string or list of them, got {shown}"
    elif not isinstance(value, str) or not value:
        return f"must be a non-empty string, got {shown}"
    elif meta.get("choices") and value not in meta["choices"]:
        return f"must be one of {', '.join(map(repr, meta['choices']))}, got {shown}"
    schemes = ("http://", "https://", "redis://", "rediss://", "unix://")
    urls = value if isinstance(value, tuple) else (value,)
    if (name.endswith("_url") or name == "endpoint") and not all(str(url).startswith(schemes) for url in urls):
        return f"must be a URL, got {shown}"
    if meta.get("file"):
        return _file_problem(name, value)
    return None


def register_file_check(name: str, check: Callable[[str], object]) -> None:
    """Have ``check(path)`` (raising ``ValueError``) read the file that field ``name`` names, whenever a ``Config``
    is made. The packages that own the formats register their readers (``ragtriage.alerts``, the evaluator's
    calibration), so this bottom module imports neither."""
    _FILE_CHECKS[name] = check


_FILE_CHECKS: dict[str, Callable[[str], object]] = {}


def _file_problem(name: str, path: str) -> str | None:
    """What is wrong with the file a setting names, read in full now rather than at the first evaluation."""
    if not os.path.isfile(path):
        return f"is not usable: {path}: no such file"
    check = _FILE_CHECKS.get(name)
    try:
        if check is not None:
            check(path)
    except ValueError as exc:
        return f"is not usable: {exc}"
    return None
