"""``ragtriage alerts test``: one test alert to each configured sink, and which worked."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import typer
from rich.console import Console
from rich.markup import escape

from ragtriage.alerts.base import AlertEvent
from ragtriage.alerts.manager import AlertManager
from ragtriage.alerts.sinks import SINK_OF_SETTING, sinks_from_config
from ragtriage.config import Config

alerts_app = typer.Typer(no_args_is_help=True, help="Alert sinks and rules.")


def example_event(project: str) -> AlertEvent:
    return AlertEvent(
        rule="test_alert",
        dedupe_key=f"ragtriage:{project}:test_alert",
        state="firing",
        severity="warning",
        metric="test",
        value=0.42,
        threshold=0.30,
        comparison="above",
        window="a test; no evaluation behind it",
        message="This is a test alert from `ragtriage alerts test`.",
        recommendation="Nothing to do: the sink works.",
        project=project,
        at=datetime.now(timezone.utc),
        test=True,
    )


@alerts_app.command("test")
def send_test_alerts(project: str = typer.Option("default", help="Project name shown in the test alert.")) -> None:
    """Send one test alert to every sink configured in the environment (RAGTRIAGE_SLACK_WEBHOOK_URL, ...).

    Exit status 1 when a sink failed, or when a sink's variable was set but unusable (the sink is then left
    out of the app too): each is listed with the reason."""
    console = Console()
    unusable = [(SINK_OF_SETTING[name], why) for name, why in Config.env_problems().items() if name in SINK_OF_SETTING]
    left_out: dict[str, str] = {}
    sinks = sinks_from_config(Config.from_env(), left_out=left_out)
    manager = AlertManager([], sinks, project=project, max_retries=0)

    async def send_all() -> list[bool]:
        event = example_event(project)
        return await asyncio.gather(*(manager.deliver(sink, event) for sink in sinks))

    results = asyncio.run(send_all())
    for sink, ok in zip(sinks, results, strict=True):
        console.print(f"{sink.name:10} {'[green]ok' if ok else '[red]FAILED'}")
    for name, why in [*unusable, *left_out.items()]:
        console.print(f"{name:10} [red]NOT SET UP[/red]: {escape(why)}")
    if not all(results) or left_out or unusable:
        raise typer.Exit(1)
