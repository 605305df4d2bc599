"""Alert sinks: Slack incoming webhooks, PagerDuty Events API v2, email over SMTP, generic webhooks.

Secrets (webhook URLs, routing keys, passwords) live in private attributes and
never appear in ``repr`` or logs; transport errors are raised to the manager,
which retries and logs only the status code or exception type.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

import httpx

from ragtriage._log_hygiene import own_http
from ragtriage.alerts.base import AlertEvent, AlertSink, LoggingAlertSink
from ragtriage.config import Config

logger = logging.getLogger(__name__)

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning"}


def _require_url(name: str, url: object) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http(s) URL")  # the value itself may be a secret: not echoed
    return url


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _HttpSink:
    name = "http"

    def __init__(self, *, timeout_s: float) -> None:
        self._timeout = timeout_s

    async def _post(self, url: str, payload: dict[str, Any], *, secret: str) -> httpx.Response:
        with own_http(secret):  # httpx would log the URL at INFO; ``secret`` is redacted at every level
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(url, json=payload)
        response.raise_for_status()
        return response


class SlackSink(_HttpSink):
    """Slack incoming webhook with a Block Kit message (header, fields, recommendation, Phoenix button)."""

    name = "slack"
    setting = "slack_webhook_url (RAGTRIAGE_SLACK_WEBHOOK_URL)"

    def __init__(self, webhook_url: str, *, timeout_s: float = 10.0) -> None:
        super().__init__(timeout_s=timeout_s)
        self._url = _require_url("webhook_url", webhook_url)

    async def send(self, event: AlertEvent) -> None:
        await self._post(self._url, slack_payload(event), secret=self._url)

    def __repr__(self) -> str:
        return "SlackSink(webhook_url=<secret>)"


def slack_payload(event: AlertEvent) -> dict[str, Any]:
    icon = ":white_check_mark:" if event.state == "resolved" else (
        ":rotating_light:" if event.severity == "critical" else ":warning:"
    )  # fmt: skip
    fields = [
        ("Metric", event.metric),
        ("Value", f"{event.value:g}"),
        ("Threshold", f"{event.comparison} {event.threshold:g}"),
        ("Severity", event.severity if event.state == "firing" else "resolved"),
        ("Window", event.window),
        ("Project", event.project),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(event.title, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"{icon} {event.message}", 3000)}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", 2000)} for k, v in fields],
        },
    ]
    if event.recommendation and event.state == "firing":
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(f"*Recommendation:* {event.recommendation}", 3000)},
            }
        )
    if event.phoenix_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in Phoenix"},
                        "url": _clip(event.phoenix_url, 3000),
                        "action_id": "open_phoenix",
                    }
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"dedupe key `{event.dedupe_key}` · {event.at:%Y-%m-%d %H:%M:%S} UTC"}
            ],
        }
    )
    return {"text": _clip(f"{event.title}: {event.message}", 3000), "blocks": blocks}


class PagerDutySink(_HttpSink):
    """PagerDuty Events API v2: ``trigger`` when firing, ``resolve`` when resolved, one ``dedup_key`` per rule."""

    name = "pagerduty"
    setting = "pagerduty_routing_key (RAGTRIAGE_PAGERDUTY_ROUTING_KEY)"

    def __init__(self, routing_key: str, *, url: str = PAGERDUTY_EVENTS_URL, timeout_s: float = 10.0) -> None:
        super().__init__(timeout_s=timeout_s)
        if not isinstance(routing_key, str) or not routing_key.strip():
            raise ValueError("routing_key must be a non-empty string")
        self._routing_key = routing_key
        self._url = _require_url("url", url)

    async def send(self, event: AlertEvent) -> None:
        await self._post(self._url, pagerduty_payload(event, self._routing_key), secret=self._routing_key)

    def __repr__(self) -> str:
        return "PagerDutySink(routing_key=<secret>)"


def pagerduty_payload(event: AlertEvent, routing_key: str) -> dict[str, Any]:
    if event.state == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": event.dedupe_key[:255]}
    payload: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": event.dedupe_key[:255],
        "payload": {
            "summary": _clip(f"{event.title}: {event.message}", 1024),
            "source": f"ragtriage/{event.project}",
            "severity": _PAGERDUTY_SEVERITY[event.severity],
            "timestamp": event.at.isoformat(),
            "component": "rag-evaluation",
            "group": event.project,
            "class": event.rule,
            "custom_details": {
                "metric": event.metric,
                "value": event.value,
                "threshold": event.threshold,
                "comparison": event.comparison,
                "window": event.window,
                "recommendation": event.recommendation,
            },
        },
    }
    if event.phoenix_url:
        payload["links"] = [{"href": event.phoenix_url, "text": "Open in Phoenix"}]
    return payload


class WebhookSink(_HttpSink):
    """POSTs the event as JSON (``AlertEvent.to_dict()``) to any URL."""

    name = "webhook"
    setting = "alert_webhook_url (RAGTRIAGE_ALERT_WEBHOOK_URL)"

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(timeout_s=timeout_s)
        self._url = _require_url("url", url)
        self._headers = dict(headers or {})

    async def send(self, event: AlertEvent) -> None:
        with own_http(self._url, *self._headers.values()):
            async with httpx.AsyncClient(timeout=self._timeout, headers=self._headers) as client:
                response = await client.post(self._url, json={"source": "ragtriage", **event.to_dict()})
        response.raise_for_status()

    def __repr__(self) -> str:
        return "WebhookSink(url=<secret>)"


class EmailSink:
    """Plain-text email over SMTP (STARTTLS and login optional); the blocking client runs in a thread."""

    name = "email"
    setting = "smtp_* (RAGTRIAGE_SMTP_*)"

    def __init__(
        self,
        *,
        host: str,
        sender: str,
        recipients: Sequence[str],
        port: int = 587,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError("host must be a non-empty string")
        if (
            isinstance(recipients, str)
            or not recipients
            or not all(isinstance(r, str) and "@" in r for r in recipients)
        ):
            raise ValueError("recipients must be a non-empty list of email addresses")
        if not isinstance(sender, str) or "@" not in sender:
            raise ValueError("sender must be an email address")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self._host, self._port = host, port
        self._sender, self._recipients = sender, list(recipients)
        self._username, self._password = username, password
        self._starttls = starttls
        self._timeout = timeout_s

    async def send(self, event: AlertEvent) -> None:
        await asyncio.to_thread(self._send_blocking, email_message(event, self._sender, self._recipients))

    def _send_blocking(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            if self._starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self._username is not None and self._password is not None:
                smtp.login(self._username, self._password)
            smtp.send_message(message)

    def __repr__(self) -> str:
        return f"EmailSink(host={self._host!r}, port={self._port}, recipients={len(self._recipients)})"


def email_message(event: AlertEvent, sender: str, recipients: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = event.title
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    lines = [
        event.message,
        "",
        f"Metric:     {event.metric}",
        f"Value:      {event.value:g} ({event.comparison} {event.threshold:g})",
        f"Severity:   {event.severity if event.state == 'firing' else 'resolved'}",
        f"Window:     {event.window}",
        f"Project:    {event.project}",
        f"Dedupe key: {event.dedupe_key}",
    ]
    if event.recommendation:
        lines += ["", f"Recommendation: {event.recommendation}"]
    if event.phoenix_url:
        lines += ["", f"Phoenix: {event.phoenix_url}"]
    message.set_content("\n".join(lines))
    return message


#: Per sink: the setting that turns it on, and the variables to check when it cannot be built.
_SINK_SETTINGS = {
    "slack": ("slack_webhook_url", "RAGTRIAGE_SLACK_WEBHOOK_URL"),
    "pagerduty": ("pagerduty_routing_key", "RAGTRIAGE_PAGERDUTY_ROUTING_KEY, RAGTRIAGE_PAGERDUTY_URL"),
    "email": ("smtp_host", "RAGTRIAGE_SMTP_*"),
    "webhook": ("alert_webhook_url", "RAGTRIAGE_ALERT_WEBHOOK_URL"),
}
#: Every setting of an alert sink, and its sink: a bad environment value of one leaves the sink out.
SINK_OF_SETTING = {
    "slack_webhook_url": "slack",
    "pagerduty_routing_key": "pagerduty",
    "pagerduty_url": "pagerduty",
    "alert_webhook_url": "webhook",
    **{f"smtp_{part}": "email" for part in ("host", "port", "from", "to", "username", "password", "starttls")},
}


def sinks_from_config(config: Config, *, left_out: dict[str, str] | None = None) -> list[AlertSink]:
    """The sinks ``config`` sets up (``slack_webhook_url``, ``pagerduty_routing_key``, ``smtp_host``,
    ``alert_webhook_url``, each from its ``RAGTRIAGE_*`` variable); the logging sink is always there.

    A sink whose settings cannot make one (an email sink without recipients) is left out with a warning
    naming its variables, and put in ``left_out`` (``{sink name: why}``) when given: alerts never stop the app."""
    # Each is built only when its setting is set (below): the ``or ""`` is never taken.
    builders: dict[str, Any] = {
        "slack": lambda: SlackSink(config.slack_webhook_url or ""),
        "pagerduty": lambda: PagerDutySink(config.pagerduty_routing_key or "", url=config.pagerduty_url),
        "email": lambda: EmailSink(
            host=config.smtp_host or "",
            port=config.smtp_port,
            sender=config.smtp_from or "",
            recipients=[r.strip() for r in (config.smtp_to or "").split(",") if r.strip()],
            username=config.smtp_username,
            password=config.smtp_password,
            starttls=config.smtp_starttls,
        ),
        "webhook": lambda: WebhookSink(config.alert_webhook_url or ""),
    }
    sinks: list[AlertSink] = [LoggingAlertSink()]
    for name, build in builders.items():
        setting, variables = _SINK_SETTINGS[name]
        if not getattr(config, setting):
            continue
        try:
            sinks.append(build())
        except (TypeError, ValueError) as exc:
            why = f"{exc} (check {variables})"
            logger.warning("ragtriage: the %s alert sink is off: %s", name, why)
            if left_out is not None:
                left_out[name] = why
    return sinks
