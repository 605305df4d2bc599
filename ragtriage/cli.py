"""The ``ragtriage`` command line."""

from __future__ import annotations

import inspect
import re

import typer
from rich.console import Console

# Help is plain text: rich markup would eat "[vllm]" in "pip install 'ragtriage[vllm]'" (and any other brackets).
app = typer.Typer(
    no_args_is_help=True, add_completion=False, rich_markup_mode=None, help="Online evaluation of RAG answers."
)


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


_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")


def help_text(docstring: str) -> str:
    """A command's reST docstring as ``--help`` shows it: ``x`` and :role:`x` as plain x, ``Example::`` as
    ``Example:`` with its literal block kept line by line (click's ``\\b``) instead of rewrapped."""
    paragraphs: list[str] = []
    in_literal = False
    for paragraph in inspect.cleandoc(docstring).split("\n\n"):
        if in_literal and paragraph.startswith(" "):
            paragraphs.append("\b\n" + paragraph)
            continue
        paragraph = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], paragraph.rstrip())
        paragraph = _LITERAL.sub(r"\1", paragraph).replace("\\ ", "")  # reST's escaped space: ``x``\ s
        in_literal = paragraph.endswith("::")
        paragraphs.append(paragraph[:-1] if in_literal else paragraph)
    return "\n\n".join(paragraphs)


def _plain_help(typer_app: typer.Typer) -> None:
    """Every command's help from its docstring, as :func:`help_text` makes it (the one place it is done), and
    its first paragraph whole in the list of commands (click would cut it at about 45 characters)."""
    for command in typer_app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = help_text(command.callback.__doc__)
        if command.short_help is None and command.help:
            command.short_help = " ".join(command.help.split("\n\n", 1)[0].split())
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            group_help = group.typer_instance.info.help
            if not isinstance(group.short_help, str) and isinstance(group_help, str):
                group.short_help = group_help
            _plain_help(group.typer_instance)


_register_subcommands()
_plain_help(app)

if __name__ == "__main__":
    app()
