"""CLI commands: ``ragtriage report`` and ``ragtriage dashboards grafana``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragtriage.config import Config

dashboards_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Dashboards for ragtriage's metrics.")


@dashboards_app.command("grafana")
def grafana(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the JSON here instead of stdout.")] = None,
    heavy_share_limit: float = typer.Option(0.30, help="Where the heavy-vector share alert line is drawn."),
) -> None:
    """Print the "Eval Vector Distribution" Grafana dashboard JSON (import it in Grafana)."""
    from ragtriage.dashboards.grafana import dashboard_json

    try:
        text = dashboard_json(heavy_share_limit=heavy_share_limit)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--heavy-share-limit") from exc
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


def report(
    jsonl: Annotated[
        Path | None, typer.Option("--jsonl", help="Results JSONL: one RAGEvaluationResult.to_dict() a line.")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", help="Read this Phoenix project's annotations.")] = None,
    phoenix_url: Annotated[
        str | None,
        typer.Option(help="Phoenix base URL (default $PHOENIX_COLLECTOR_ENDPOINT or http://localhost:6006)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("ragtriage-report.html"),
    worst: int = typer.Option(20, min=1, help="How many of the worst traces to list."),
) -> None:
    """Write a self-contained HTML report (works offline) from Phoenix or from a results JSONL."""
    from ragtriage.dashboards.report import require_plotly, write_report
    from ragtriage.dashboards.sources import phoenix_project_url, records_from_jsonl, records_from_phoenix

    if jsonl is None and project is None:
        raise typer.BadParameter("give --jsonl FILE or --project NAME")
    try:
        require_plotly()  # before reading anything: the one line that fixes it, not a traceback
    except ImportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    config = Config.from_env(endpoint=phoenix_url)
    endpoint, api_key = config.endpoint, config.phoenix_api_key
    link_base = None
    if jsonl is not None:
        try:
            records = records_from_jsonl(jsonl)
        except (OSError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        source = f"from {jsonl.name}"
    else:
        assert project is not None
        try:
            records = records_from_phoenix(endpoint, project, api_key=api_key)
        except Exception as exc:
            typer.echo(f"error: could not read project {project!r} from Phoenix at {endpoint}: {exc}", err=True)
            raise typer.Exit(2) from exc
        source = f"Phoenix project {project} at {endpoint}"
    if project is not None and (phoenix_url or jsonl is None):
        link_base = phoenix_project_url(endpoint, project, api_key=api_key)
    path = write_report(records, out, source=source, phoenix_project_url=link_base, worst=worst)
    typer.echo(f"wrote {path} ({len(records)} evaluations)")
