"""What an alert says, and the plug-in point for where it goes."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

logger = logging.getLogger("ragtriage.alerts")

AlertState = Literal["firing", "resolved"]
AlertSeverity = Literal["warning", "critical"]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One notification: a rule started firing, is still firing after its cooldown, or resolved."""

    rule: str
    dedupe_key: str
    state: AlertState
    severity: AlertSeverity
    metric: str
    value: float
    threshold: float
    comparison: Literal["below", "above"]
    window: str
    message: str
    recommendation: str
    project: str
    at: datetime
    phoenix_url: str | None = None
    test: bool = False

    @property
    def title(self) -> str:
        verb = "resolved" if self.state == "resolved" else self.severity.upper()
        prefix = "[TEST] " if self.test else ""
        return f"{prefix}ragtriage {verb}: {self.rule} ({self.project})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


@runtime_checkable
class AlertSink(Protocol):
    """Somewhere alerts go. ``send`` raises on failure; the caller retries within bounds and counts."""

    name: str

    async def send(self, event: AlertEvent) -> None: ...


class LoggingAlertSink:
    """Writes each alert to the ``ragtriage.alerts`` logger (error when critical and firing)."""

    name = "log"

    async def send(self, event: AlertEvent) -> None:
        level = logging.ERROR if event.severity == "critical" and event.state == "firing" else logging.WARNING
        logger.log(level, "%s: %s; %s", event.title, event.message, event.recommendation)

    def __repr__(self) -> str:
        return "LoggingAlertSink()"


class RecordingAlertSink:
    """Keeps each alert instead of sending it: what an offline run (``ragtriage ci``) would have sent."""

    name = "report"

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    async def send(self, event: AlertEvent) -> None:
        self.events.append(event)

    def __repr__(self) -> str:
        return f"RecordingAlertSink({len(self.events)} events)"
