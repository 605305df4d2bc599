"""The alert-sink plug-in point."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ragtriage.evaluator.results import RAGAlert

logger = logging.getLogger("ragtriage.alerts")


@runtime_checkable
class AlertSink(Protocol):
    """Somewhere alerts go. ``send`` may raise; the caller isolates and counts failures."""

    async def send(self, alert: RAGAlert) -> None: ...


class LoggingAlertSink:
    """Writes each alert to the ``ragtriage.alerts`` logger (warning or error by severity)."""

    async def send(self, alert: RAGAlert) -> None:
        level = logging.ERROR if alert.severity == "critical" else logging.WARNING
        logger.log(level, "%s [%s] %s; %s", alert.metric, alert.severity, alert.message, alert.recommendation)

    def __repr__(self) -> str:
        return "LoggingAlertSink()"
