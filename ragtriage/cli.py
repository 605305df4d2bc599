"""The ``ragtriage`` command line."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Online evaluation of RAG answers.")


@app.command()
def demo(
    keep_running: bool = typer.Option(False, "--keep-running", help="Keep Phoenix up after the run for a look."),
    phoenix: bool = typer.Option(True, "--phoenix/--no-phoenix", help="Write the scores back into Phoenix."),
) -> None:
    """Run a small instrumented RAG app and evaluate its traces (no API key, no GPU needed)."""
    from ragtriage.demo.run import run_demo

    raise typer.Exit(run_demo(keep_running=keep_running, use_phoenix=phoenix, console=Console()))


@app.command()
def version() -> None:
    """Print the installed version."""
    from ragtriage._version import __version__

    typer.echo(__version__)


def _register_subcommands() -> None:
    from ragtriage.alerts.cli import alerts_app
    from ragtriage.collector.cli import collect
    from ragtriage.dashboards.cli import dashboards_app, report
    from ragtriage.gate.cli import register as register_release_gate
    from ragtriage.judges.cli import judge_app
    from ragtriage.streams.cli import worker

    app.add_typer(alerts_app, name="alerts")
    app.add_typer(dashboards_app, name="dashboards")
    app.add_typer(judge_app, name="judge")
    app.command("report")(report)
    register_release_gate(app)
    app.command("worker")(worker)
    app.command("collect")(collect)


_register_subcommands()

if __name__ == "__main__":
    app()
