"""``ragtriage synth | ci | calibrate``: registered on the main CLI by :func:`register`."""

# ruff: noqa: B008  (typer declares options as argument defaults)

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ragtriage.config import Config
from ragtriage.errors import DatasetError
from ragtriage.gate.datasets import load_dataset, write_dataset
from ragtriage.runtime import Runtime, build

_err = Console(stderr=True)

LOCAL_URL = typer.Option(None, "--local-judge-url", help="Local (vLLM) judge URL; default RAGTRIAGE_LOCAL_JUDGE_URL.")
LOCAL_MODEL = typer.Option(None, "--local-judge-model", help="Default RAGTRIAGE_LOCAL_JUDGE_MODEL.")
HEAVY_URL = typer.Option(None, "--heavy-judge-url", help="Heavy judge URL; default RAGTRIAGE_HEAVY_JUDGE_URL.")
HEAVY_MODEL = typer.Option(None, "--heavy-judge-model", help="Default RAGTRIAGE_HEAVY_JUDGE_MODEL.")
CONCURRENCY = typer.Option(4, "--concurrency", min=1, help="Evaluations in flight at once.")
SEND_ALERTS = typer.Option(
    False, "--send-alerts", help="Send the alerts this run raises to the configured sinks (default: report them only)."
)
BATCH = typer.Option(
    False, "--batch", help="Heavy-judge calls through the OpenAI Batch API, at half price (answers take longer)."
)
BATCH_WAIT = typer.Option(
    "1h", "--batch-wait", help="Wait this long for a batch; then judge what it has not answered synchronously."
)
BATCH_POLL = typer.Option("10s", "--batch-poll", help="How often to ask whether a batch is done.")


def parse_duration(text: str) -> float:
    """``90``, ``60s``, ``2m``, ``1h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise typer.BadParameter(f"not a duration: {text!r} (use e.g. 90, 60s, 2m, 1h)")
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return float(match.group(1)) * factor


def _config(local_url: str | None, local_model: str | None, heavy_url: str | None, heavy_model: str | None) -> Config:
    return Config.from_env(
        local_judge_url=local_url,
        local_judge_model=local_model,
        heavy_judge_url=heavy_url,
        heavy_judge_model=heavy_model,
    )


def _runtime(
    local_url: str | None,
    local_model: str | None,
    heavy_url: str | None,
    heavy_model: str | None,
    *,
    send_alerts: bool = False,
) -> Runtime:
    """The offline runtime: the production pipeline from the same settings, alerts only reported unless asked."""
    try:
        return build(_config(local_url, local_model, heavy_url, heavy_model), "offline", send_alerts=send_alerts)
    except ValueError as exc:  # a broken rules or calibration file
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _batched(runtime: Runtime, batch: bool, wait: str, poll: str) -> Any:
    """With ``--batch``, the heavy judge of ``runtime`` goes through the Batch API (a BatchJudge), else None."""
    if not batch:
        return None
    from ragtriage.judges.batch import BatchJudge
    from ragtriage.judges.llm import LLMJudge

    evaluator = runtime.evaluator
    assert evaluator is not None
    if not isinstance(evaluator.heavy_judge, LLMJudge):
        _err.print("[red]error:[/red] --batch needs a heavy judge (OPENAI_API_KEY or RAGTRIAGE_HEAVY_JUDGE_URL)")
        raise typer.Exit(2)
    evaluator.heavy_judge = BatchJudge(evaluator.heavy_judge, wait_s=parse_duration(wait), poll_s=parse_duration(poll))
    return evaluator.heavy_judge


def alert_notes(runtime: Runtime, sent: bool) -> list[str]:
    """What the run's alerts were, for its report; sent to the sinks only with ``--send-alerts``."""
    events = runtime.recorded.events if runtime.recorded is not None else []
    verb = "sent" if sent else "not sent (--send-alerts sends it)"
    return [f"alert {e.state} ({verb}): {e.rule}: {e.message}" for e in events]


def _load(path: Path) -> list[Any]:
    try:
        return load_dataset(path)
    except DatasetError as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _load_phoenix(name: str) -> list[Any]:
    from ragtriage.gate.phoenix_datasets import load_phoenix_dataset

    config = Config.from_env()
    try:
        return load_phoenix_dataset(config.endpoint, name, api_key=config.phoenix_api_key)
    except (DatasetError, httpx.HTTPError) as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def synth(
    source: Path | None = typer.Argument(None, help="A JSONL dataset, or a folder of .txt/.md documents."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write the adversarial JSONL."),
    from_phoenix_dataset: str | None = typer.Option(
        None,
        "--from-phoenix-dataset",
        metavar="NAME",
        help="Instead of SOURCE: this Phoenix dataset's items; the variants are added to it (and to -o if given).",
    ),
    kinds: str = typer.Option("", "--kinds", help="Comma-separated perturbations (default: all)."),
    per_kind: int | None = typer.Option(None, "--per-kind", min=1, help="At most this many items per perturbation."),
    include_originals: bool = typer.Option(False, "--include-originals", help="Also write the source rows."),
    seed: int = typer.Option(0, "--seed"),
    local_url: str | None = LOCAL_URL,
    local_model: str | None = LOCAL_MODEL,
    heavy_url: str | None = HEAVY_URL,
    heavy_model: str | None = HEAVY_MODEL,
) -> None:
    """Build an adversarial test set: labelled perturbations (no LLM), or LLM-written questions from documents.

    Example::

        ragtriage synth golden.jsonl -o adversarial.jsonl --per-kind 20
        ragtriage synth --from-phoenix-dataset prod-failures   # variants added to the dataset itself
    """
    from ragtriage.gate.synth import synthesize

    if (source is None) == (from_phoenix_dataset is None):
        raise typer.BadParameter("give SOURCE or --from-phoenix-dataset NAME (one of them)")
    if source is not None and output is None:
        raise typer.BadParameter("--output is needed with SOURCE", param_hint="--output")
    if from_phoenix_dataset is not None:
        originals = _load_phoenix(from_phoenix_dataset)
    elif source is not None and source.is_dir():
        from ragtriage.gate.synth_llm import generate_questions, load_documents

        config = _config(local_url, local_model, heavy_url, heavy_model)
        url: str | None
        if config.local_judge_url:
            url, model, key = config.local_judge_url[0], config.local_judge_model, None
        elif config.heavy_judge_url or config.openai_api_key:
            url, model, key = config.heavy_judge_url, config.heavy_judge_model, config.openai_api_key
        else:
            _err.print("[red]error:[/red] a folder of documents needs a judge endpoint to write questions")
            _err.print("set --local-judge-url / RAGTRIAGE_LOCAL_JUDGE_URL (or a heavy judge); datasets need none")
            raise typer.Exit(2)
        generated = asyncio.run(generate_questions(load_documents(source), base_url=url, model=model, api_key=key))
        for reason, count in generated.rejected.items():
            _err.print(f"rejected {count}: {reason}")
        originals = generated.items
    else:
        assert source is not None
        originals = _load(source)
    chosen = [k.strip() for k in kinds.split(",") if k.strip()] or None
    try:
        report = synthesize(originals, kinds=chosen, per_kind=per_kind, seed=seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--kinds") from None
    generated_rows = source is not None and source.is_dir()
    rows = ([*originals] if include_originals or generated_rows else []) + report.items
    if output is not None:
        written = write_dataset(output, rows)
        typer.echo(f"wrote {written} items to {output}")
    if from_phoenix_dataset is not None and report.items:
        from ragtriage.gate.phoenix_datasets import push_items

        config = Config.from_env()
        try:
            push_items(config.endpoint, from_phoenix_dataset, report.items, api_key=config.phoenix_api_key)
        except DatasetError as exc:
            _err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        typer.echo(f"added {len(report.items)} adversarial variants to Phoenix dataset {from_phoenix_dataset}")
    for kind in report.made.keys() | report.not_applicable.keys() | report.leaked.keys():
        _err.print(
            f"{kind}: {report.made[kind]} made, {report.not_applicable[kind]} not applicable,"
            f" {report.leaked[kind]} dropped for context leakage"
        )


def ci(
    dataset: Path | None = typer.Option(None, "--dataset", help="Labelled JSONL dataset."),
    phoenix_dataset: str | None = typer.Option(
        None, "--phoenix-dataset", metavar="NAME", help="Instead of --dataset: a Phoenix dataset (dataset push)."
    ),
    n: int = typer.Option(50, "--n", min=1, help="Items to evaluate (stratified across categories)."),
    adversarial_share: float = typer.Option(0.3, "--adversarial-share", min=0.0, max=1.0),
    budget_usd: float | None = typer.Option(None, "--budget-usd", min=0.0, help="Stop before spending more."),
    time_limit: str | None = typer.Option(None, "--time-limit", help="Stop after this long: 90, 60s, 2m."),
    baseline: Path | None = typer.Option(None, "--baseline", help="A previous run's --json report."),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Write a markdown summary here."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the full report (a future --baseline)."),
    min_pass_rate: float | None = typer.Option(None, "--min-pass-rate", min=0.0, max=1.0),
    min_detection: float | None = typer.Option(None, "--min-detection", min=0.0, max=1.0),
    min_agreement: float | None = typer.Option(None, "--min-agreement", min=0.0, max=1.0),
    max_not_decided: float | None = typer.Option(None, "--max-not-decided", min=0.0, max=1.0),
    max_judge_errors: int = typer.Option(0, "--max-judge-errors", min=0),
    max_drop: float = typer.Option(0.05, "--max-drop", min=0.0, max=1.0, help="Tolerated drop vs baseline."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="A budget/time stop does not fail the gate."),
    seed: int = typer.Option(0, "--seed"),
    concurrency: int = CONCURRENCY,
    send_alerts: bool = SEND_ALERTS,
    batch: bool = BATCH,
    batch_wait: str = BATCH_WAIT,
    batch_poll: str = BATCH_POLL,
    local_url: str | None = LOCAL_URL,
    local_model: str | None = LOCAL_MODEL,
    heavy_url: str | None = HEAVY_URL,
    heavy_model: str | None = HEAVY_MODEL,
) -> None:
    """Gate a release: evaluate a stratified (partly adversarial) sample; exit 1 when a gate fails.

    Judges, rules file, calibration file and sinks come from the same ``RAGTRIAGE_*`` settings as
    production; the alerts the run raises go into its report, and to the sinks only with ``--send-alerts``.

    Example::

        ragtriage ci --dataset golden.jsonl --n 100 --budget-usd 0.50 --time-limit 10m --min-pass-rate 0.8
        ragtriage ci --dataset golden.jsonl --n 500 --batch --batch-wait 2h   # heavy judge at batch prices
        ragtriage ci --phoenix-dataset prod-failures --n 200 --min-detection 0.9
    """
    if (dataset is None) == (phoenix_dataset is None):
        raise typer.BadParameter("give --dataset FILE or --phoenix-dataset NAME (one of them)")
    from ragtriage.gate.output import markdown, write_junit
    from ragtriage.gate.runner import GateConfig, evaluate_gates, load_baseline, report_json, stratified_sample

    limit = parse_duration(time_limit) if time_limit else None
    base = None
    if baseline is not None:
        try:
            base = load_baseline(baseline)
        except ValueError as exc:
            _err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    items = _load(dataset) if dataset is not None else _load_phoenix(phoenix_dataset or "")
    sample, notes = stratified_sample(items, n, adversarial_share=adversarial_share, seed=seed)
    runtime = _runtime(local_url, local_model, heavy_url, heavy_model, send_alerts=send_alerts)
    evaluator = runtime.evaluator
    assert evaluator is not None
    if evaluator.local_judge is None and evaluator.heavy_judge is None:
        notes.append("no LLM judge configured: free tiers only, undecided items are reported as not decided")
    batched = _batched(runtime, batch, batch_wait, batch_poll)
    if batched is not None:  # every item in flight, so the heavy calls gather into few batches
        concurrency = max(concurrency, len(sample))
    report = asyncio.run(_run(runtime, sample, budget_usd, limit, concurrency))
    report.notes += notes + alert_notes(runtime, send_alerts) + ([batched.note()] if batched is not None else [])
    gates = GateConfig(
        min_pass_rate, min_detection, min_agreement, max_not_decided, max_judge_errors, allow_partial, max_drop
    )
    checks = evaluate_gates(report, gates, base)
    summary = markdown(report, checks, base)
    if markdown_path:
        markdown_path.write_text(summary, encoding="utf-8")
    if junit:
        write_junit(junit, report, checks)
    if json_path:
        json_path.write_text(json.dumps(report_json(report, checks), indent=1), encoding="utf-8")
    Console().print(summary, markup=False, highlight=False)
    raise typer.Exit(0 if all(c.passed for c in checks) else 1)


async def _run(runtime: Runtime, sample: list[Any], budget: float | None, limit: float | None, concurrency: int) -> Any:
    from ragtriage.gate.runner import run_gate

    evaluator = runtime.evaluator
    assert evaluator is not None
    columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=_err, transient=True) as progress:
            task = progress.add_task("eval", total=len(sample))
            return await run_gate(
                evaluator,
                sample,
                budget_usd=budget,
                time_limit_s=limit,
                concurrency=concurrency,
                on_done=lambda _: progress.advance(task),
            )
    finally:
        await runtime.aclose()


def calibrate(
    labels: Path | None = typer.Option(None, "--labels", help="JSONL dataset with human labels."),
    from_phoenix: str | None = typer.Option(
        None,
        "--from-phoenix",
        metavar="PROJECT",
        help="Instead of --labels: this Phoenix project's human_verdict labels against ragtriage's own annotations.",
    ),
    since: str | None = typer.Option(
        None, "--since", help="With --from-phoenix: traces started since an ISO date/time or a duration ago (7d, 12h)."
    ),
    output: Path = typer.Option(Path("ragtriage-calibration.json"), "--output", "-o"),
    target_precision: float = typer.Option(0.9, "--target-precision", min=0.0, max=1.0),
    budget_usd: float | None = typer.Option(
        None, "--budget-usd", min=0.0, help="Stop starting judge calls before spending more; the report says so."
    ),
    concurrency: int = CONCURRENCY,
    send_alerts: bool = SEND_ALERTS,
    batch: bool = BATCH,
    batch_wait: str = BATCH_WAIT,
    batch_poll: str = BATCH_POLL,
    local_url: str | None = LOCAL_URL,
    local_model: str | None = LOCAL_MODEL,
    heavy_url: str | None = HEAVY_URL,
    heavy_model: str | None = HEAVY_MODEL,
) -> None:
    """Measure each tier against human labels and recommend thresholds; writes a file RAGEvaluator loads.

    With ``--labels``, every tier judges every labelled item; with ``--from-phoenix``, the labels reviewers set
    in Phoenix (``human_verdict``) are compared with what ragtriage already decided in production: no judge call.

    Example::

        ragtriage calibrate --labels labelled.jsonl --target-precision 0.95 --budget-usd 2 -o calibration.json
        ragtriage calibrate --labels labelled.jsonl --batch -o calibration.json   # heavy judge at batch prices
        ragtriage calibrate --from-phoenix my-app --since 30d -o calibration.json
        RAGTRIAGE_CALIBRATION_FILE=calibration.json ragtriage worker ...
    """
    if (labels is None) == (from_phoenix is None):
        raise typer.BadParameter("give --labels FILE or --from-phoenix PROJECT (one of them)")
    if from_phoenix is not None:
        _calibrate_from_phoenix(from_phoenix, since, output, target_precision)
        return
    if since is not None:
        raise typer.BadParameter("--since goes with --from-phoenix", param_hint="--since")
    assert labels is not None
    from ragtriage.gate.calibration import calibrate as run_calibration
    from ragtriage.gate.calibration import collect

    items = _load(labels)
    runtime = _runtime(local_url, local_model, heavy_url, heavy_model, send_alerts=send_alerts)
    evaluator = runtime.evaluator
    assert evaluator is not None

    batched = _batched(runtime, batch, batch_wait, batch_poll)
    if batched is not None:  # every item in flight, so the heavy calls gather into few batches
        concurrency = max(concurrency, len(items))

    async def go() -> Any:
        try:
            return await collect(evaluator, items, concurrency=concurrency, budget_usd=budget_usd)
        finally:
            await runtime.aclose()

    scores = asyncio.run(go())
    report = run_calibration(
        items, scores, target_precision=target_precision, current=evaluator.thresholds.faithfulness
    )
    extra = [*alert_notes(runtime, send_alerts), *([batched.note()] if batched else [])]
    _write_calibration(report, extra, output)


def _calibrate_from_phoenix(project: str, since: str | None, output: Path, target_precision: float) -> None:
    from ragtriage.dashboards.sources import records_from_phoenix
    from ragtriage.gate.calibration import calibrate_from_records

    config = Config.from_env()
    start = parse_since(since) if since else None
    try:
        records = records_from_phoenix(config.endpoint, project, api_key=config.phoenix_api_key, since=start)
    except Exception as exc:
        _err.print(f"[red]error:[/red] could not read project {project!r} from Phoenix at {config.endpoint}: {exc}")
        raise typer.Exit(2) from None
    source = f"Phoenix project {project}" + (f" since {start:%Y-%m-%d %H:%M} UTC" if start else "")
    _write_calibration(calibrate_from_records(records, target_precision=target_precision, source=source), [], output)


def _write_calibration(report: Any, extra_notes: list[str], output: Path) -> None:
    from rich.table import Table

    data = report.to_dict()
    output.write_text(json.dumps(data, indent=1), encoding="utf-8")
    columns = ("n", "decided", "accuracy", "precision", "recall", "kappa")
    table = Table("tier", *columns, title="agreement with labels (precision/recall of fail, 95% intervals)")
    for tier, m in data["tiers"].items():
        table.add_row(tier, *(_cell(m[k], m.get(f"{k}_interval")) for k in columns))
    console = Console()
    console.print(table)
    for tier, m in data["tiers"].items():
        console.print(f"{tier} confusion (label -> prediction): {json.dumps(m['confusion'])}", markup=False)
    for note in [*report.notes, *extra_notes]:
        console.print(f"- {note}", markup=False)
    console.print(f"wrote {output}", markup=False)


def _cell(value: Any, interval: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value} [{interval[0]}, {interval[1]}]" if interval else str(value)


def parse_since(text: str) -> datetime:
    """``2026-11-01``, ``2026-11-01T08:00``, or a duration ago (``7d``, ``12h``, ``90m``) -> a UTC datetime."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return datetime.now(timezone.utc) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not a date or a duration: {text!r} (use 2026-11-01 or 7d)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


dataset_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Production traces into Phoenix datasets.")


@dataset_app.command("push")
def dataset_push(
    project: str = typer.Argument(..., help="The Phoenix project whose evaluated traces to push."),
    name: str = typer.Option(..., "--name", help="The Phoenix dataset to add them to (created if absent)."),
    verdict: list[str] = typer.Option([], "--verdict", help="Only this verdict (pass, fail, uncertain); repeatable."),
    tier: list[str] = typer.Option([], "--tier", help="Only traces this tier decided; repeatable."),
    disagree: str | None = typer.Option(
        None, "--disagree", help="Only traces whose verdict the auditor, a human, or either (any) contradicts."
    ),
    since: str | None = typer.Option(None, "--since", help="Traces started since an ISO date/time or 7d, 12h ago."),
    until: str | None = typer.Option(None, "--until", help="... and until this date/time or duration ago."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many (the most recent)."),
) -> None:
    """Add a project's evaluated traces to a Phoenix dataset, each linked to its source span and labelled
    (a reviewer's human_verdict where there is one, else the auditor's, else ragtriage's verdict).

    Example::

        ragtriage dataset push my-app --name prod-failures --verdict fail --since 7d
        ragtriage dataset push my-app --name disputed --disagree human
        ragtriage ci --phoenix-dataset prod-failures --n 100 --min-detection 0.9
    """
    from ragtriage.gate.phoenix_datasets import DISAGREEMENTS, TraceFilter, push_traces

    if disagree is not None and disagree not in DISAGREEMENTS:
        raise typer.BadParameter(f"use one of {', '.join(DISAGREEMENTS)}", param_hint="--disagree")
    where = TraceFilter(
        verdicts=frozenset(verdict),
        tiers=frozenset(tier),
        disagree=disagree,  # checked above
        since=parse_since(since) if since else None,
        until=parse_since(until) if until else None,
        limit=limit,
    )
    config = Config.from_env()
    try:
        report = push_traces(config.endpoint, project, name, where, api_key=config.phoenix_api_key)
    except (DatasetError, LookupError, httpx.HTTPError) as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for reason, count in report.skipped.items():
        _err.print(f"skipped {count}: {reason}")
    typer.echo(
        f"{report.matched} traces matched; added {report.pushed} to Phoenix dataset {name} ({report.created} new)"
    )
    if not report.pushed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``synth``, ``ci``, ``calibrate`` and ``dataset push`` to the ``ragtriage`` CLI."""
    app.command()(synth)
    app.command()(ci)
    app.command()(calibrate)
    app.add_typer(dataset_app, name="dataset")
