"""AlertManager: windows of results, rule lifecycle (fire, cooldown, resolve), delivery to sinks.

``observe`` is called with every result on the evaluating loop: it records the
observation in the manager's :class:`~ragtriage.alerts.state.AlertState` (memory,
or Redis for a fleet; no waiting on I/O) and, at most every ``evaluate_every_s``,
starts a turn that runs the rules on the window. Deliveries are tasks on the
running loop, each with a timeout and bounded retries, so a slow or failing sink
never holds up evaluations or the other sinks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from ragtriage.alerts.base import AlertEvent, AlertSink
from ragtriage.alerts.rules import Check, Observation, Rule, TierDriftRule
from ragtriage.alerts.state import AlertState, MemoryAlertState, RuleState
from ragtriage.evaluator.results import RAGEvaluationResult

logger = logging.getLogger(__name__)

#: Builds an event's ``phoenix_url``: ``(rule, since, until)`` -> the traces the alert is about, evaluated between
#: ``since`` and ``until`` (epoch seconds); given by whoever knows Phoenix (``ragtriage.runtime``).
PhoenixLink = Callable[[Rule, float, float], str | None]


class AlertManager:
    """Turns a stream of results into alert events, once per rule and project, and delivers them."""

    def __init__(
        self,
        rules: Sequence[Rule],
        sinks: Sequence[AlertSink],
        *,
        project: str = "default",
        phoenix_url: str | None = None,
        phoenix_link: PhoenixLink | None = None,
        send_timeout_s: float = 10.0,
        max_retries: int = 2,
        evaluate_every_s: float = 1.0,
        baseline: str = "previous",
        state: AlertState | None = None,
    ) -> None:
        for i, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise TypeError(f"rules[{i}] must be an alert Rule, got {rule!r}")
        for i, sink in enumerate(sinks):
            if not isinstance(sink, AlertSink):
                raise TypeError(f"sinks[{i}] must implement AlertSink (name, async send(event)), got {sink!r}")
        if state is not None and not isinstance(state, AlertState):
            raise TypeError(f"state must implement AlertState (record, turn, aclose), got {state!r}")
        if baseline not in ("previous", "frozen"):
            raise ValueError(f"baseline must be 'previous' or 'frozen', got {baseline!r}")
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique, got {names}")
        self.rules = tuple(rules)
        self.sinks = tuple(sinks)
        self.project = project
        self.phoenix_url = phoenix_url  # the fallback link, when there is no phoenix_link or it fails
        self._phoenix_link = phoenix_link
        self._timeout = send_timeout_s
        self._max_retries = max_retries
        self._every = evaluate_every_s
        self._baseline_mode = baseline
        self.state: AlertState = state if state is not None else MemoryAlertState()
        self._frozen: list[Observation] | None = None
        self._last_evaluated = 0.0
        self._turn_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._listeners: list[Callable[[AlertEvent], None]] = []
        self.counts: Counter[str] = Counter()

    def add_rule(self, rule: Rule) -> None:
        """Add a rule after construction (e.g. one that reads the span processor's counters)."""
        if not isinstance(rule, Rule):
            raise TypeError(f"rule must be an alert Rule, got {rule!r}")
        if any(r.name == rule.name for r in self.rules):
            raise ValueError(f"a rule named {rule.name!r} exists already")
        self.rules = (*self.rules, rule)

    def add_listener(self, listener: Callable[[AlertEvent], None]) -> None:
        """Also call ``listener`` with every event (e.g. to count alerts in metrics)."""
        self._listeners.append(listener)

    @property
    def _keep(self) -> int:
        """Observations a turn needs: two windows of the longest rule (the drift rule's baseline)."""
        return 2 * max((r.window_size for r in self.rules), default=1)

    def observe(self, result: RAGEvaluationResult) -> None:
        """An evaluator observer: record the result and, when due, start a turn (needs a running loop)."""
        now = time.time()  # wall clock: windows may be shared between hosts (ragtriage worker)
        self.state.record(Observation.of(result, now), self._keep)
        if now - self._last_evaluated >= self._every and not self._turn_pending:
            self._last_evaluated = now
            self._turn_pending = True  # results that arrive before it runs are judged in the same turn
            self._spawn(self._due_turn())

    async def _due_turn(self) -> None:
        self._turn_pending = False
        await self.tick()

    async def tick(self, now: float | None = None) -> list[AlertEvent]:
        """Run every rule on the window (unless another process holds the turn); send what the lifecycle
        calls for and return it."""
        now = time.time() if now is None else now
        try:
            async with self.state.turn([r.name for r in self.rules], self._keep) as turn:
                events = [] if turn is None else self._judge(turn.observations, turn.rules, now)
        except Exception as exc:  # a shared state store that is down must not stop evaluations
            self.counts["state_errors"] += 1
            logger.warning("ragtriage: alert state unavailable (%s); rules not run this turn", type(exc).__name__)
            return []
        for event in events:
            self.dispatch(event)
        return events

    def _judge(self, observations: list[Observation], states: dict[str, RuleState], now: float) -> list[AlertEvent]:
        events = []
        for rule in self.rules:
            window, baseline = self._windows(rule, observations, now)
            try:
                check = rule.check(window, baseline)
            except Exception:
                self.counts["rule_errors"] += 1
                logger.exception("ragtriage: alert rule %s failed", rule.name)
                continue
            if check is not None:
                event = self._transition(rule, states.setdefault(rule.name, RuleState()), check, now)
                if event is not None:
                    since = window[0].at if window else now - rule.window_s
                    events.append(replace(event, phoenix_url=self._link(rule, since, now)))
        return events

    def _windows(
        self, rule: Rule, observations: list[Observation], now: float
    ) -> tuple[list[Observation], list[Observation]]:
        recent = [o for o in observations[-rule.window_size :] if o.at >= now - rule.window_s]
        if not isinstance(rule, TierDriftRule):
            return recent, []
        if self._baseline_mode == "frozen":
            if self._frozen is None and len(observations) >= 2 * rule.window_size:
                self._frozen = observations[: rule.window_size]
            return (recent, self._frozen) if self._frozen is not None else (recent, [])
        earlier = observations[: len(observations) - len(recent)][-rule.window_size :]
        return recent, earlier

    def _transition(self, rule: Rule, state: RuleState, check: Check, now: float) -> AlertEvent | None:
        if check.breached:
            severity = rule.severity(check.value, check.threshold)
            escalated = severity == "critical" and state.severity == "warning"
            if state.firing and not escalated and now - state.last_sent < rule.cooldown_s:
                self.counts["suppressed_by_cooldown"] += 1
                return None
            state.firing, state.last_sent, state.severity = True, now, severity
            return self._event(rule, check, "firing", severity)
        if state.firing:
            state.firing, state.severity = False, ""
            return self._event(rule, check, "resolved", "warning")
        return None

    def _event(self, rule: Rule, check: Check, state: str, severity: str) -> AlertEvent:
        relation = "<" if rule.comparison == "below" else ">"
        if state == "resolved":
            relation = ">=" if rule.comparison == "below" else "<="
        what = check.detail or rule.name
        window = f"last {check.samples} evaluations (window: {rule.window_size} results / {rule.window_s / 60:g} min)"
        return AlertEvent(
            rule=rule.name,
            dedupe_key=f"ragtriage:{self.project}:{rule.name}",
            state=state,  # type: ignore[arg-type]
            severity=severity,  # type: ignore[arg-type]
            metric=check.detail or rule.name,
            value=round(check.value, 4),
            threshold=check.threshold,
            comparison=rule.comparison,
            window=window,
            message=f"{what} {_pct(check.value)} {relation} {_pct(check.threshold)} over the {window}",
            recommendation=rule.recommendation,
            project=self.project,
            at=datetime.now(timezone.utc),
            phoenix_url=self.phoenix_url,
        )

    def _link(self, rule: Rule, since: float, now: float) -> str | None:
        """The event's link: to the traces it is about when a ``phoenix_link`` is given, else ``phoenix_url``."""
        if self._phoenix_link is None:
            return self.phoenix_url
        try:
            return self._phoenix_link(rule, since, now) or self.phoenix_url
        except Exception:  # a broken link builder costs the link, never the alert
            self.counts["link_errors"] += 1
            logger.exception("ragtriage: building the Phoenix link for %s failed", rule.name)
            return self.phoenix_url

    # -- delivery -------------------------------------------------------------------------------------

    def dispatch(self, event: AlertEvent) -> None:
        """Deliver ``event`` to every sink in the background (needs a running loop)."""
        self.counts[f"events_{event.state}"] += 1
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("ragtriage: alert listener failed")
        for sink in self.sinks:
            # Per sink and rule, in order: a resolve must never overtake its trigger (PagerDuty would
            # then keep the incident open). Different sinks and rules still go in parallel.
            key = (id(sink), event.dedupe_key)
            self._last[key] = self._spawn(self._deliver_after(self._last.get(key), sink, event))

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver_after(self, previous: asyncio.Task[None] | None, sink: AlertSink, event: AlertEvent) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        await self.deliver(sink, event)

    async def deliver(self, sink: AlertSink, event: AlertEvent) -> bool:
        """Send with a timeout and bounded, jittered retries; ``False`` (counted, logged) if it never worked."""
        reason = ""
        for attempt in range(self._max_retries + 1):
            try:
                await asyncio.wait_for(sink.send(event), self._timeout)
            except Exception as exc:  # sinks raise what their transport raises
                reason = _safe_reason(exc)
                if attempt < self._max_retries:
                    self.counts[f"retries_{sink.name}"] += 1
                    await asyncio.sleep(min(0.5 * 2**attempt, 5.0) * random.uniform(0.5, 1.5))
                continue
            self.counts[f"sent_{sink.name}"] += 1
            return True
        self.counts[f"failed_{sink.name}"] += 1
        # Never the exception text: it may carry the webhook URL or a key.
        setting = getattr(sink, "setting", None)
        logger.warning(
            "ragtriage: alert sink %s failed for %s: %s%s",
            sink.name,
            event.rule,
            reason,
            f"; check {setting}" if setting else "",
        )
        return False

    async def flush(self) -> None:
        """Wait for this loop's turns and deliveries (a turn may start deliveries: wait for those too)."""
        loop = asyncio.get_running_loop()
        while tasks := [t for t in self._tasks if t.get_loop() is loop and not t.done()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Flush, then close the state store's connections."""
        await self.flush()
        await self.state.aclose()

    def __repr__(self) -> str:
        return f"AlertManager(rules={[r.name for r in self.rules]}, sinks={[s.name for s in self.sinks]})"


def _pct(value: float) -> str:
    return f"{value:.0%}" if 0 <= value <= 1 else f"{value:.3g}"


def _safe_reason(exc: BaseException) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return type(exc).__name__
