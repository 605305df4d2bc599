"""Gate inside pytest: opt in with ``pytest_plugins = ["ragtriage.gate.pytest_plugin"]`` in a conftest.

It is not registered through a ``pytest11`` entry point, so installing ragtriage changes no one's test run.
The ``ragtriage_gate`` fixture runs the same sample, budget, time limit and gates as ``ragtriage ci`` and
returns the report; ``report.assert_passed()`` fails the test with the markdown summary. Each gate run is
also summarized at the end of the pytest session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ragtriage.config import Config
from ragtriage.evaluator import RAGEvaluator
from ragtriage.gate.cli import alert_notes
from ragtriage.gate.datasets import Item, load_dataset
from ragtriage.gate.output import markdown
from ragtriage.gate.runner import (
    GateCheck,
    GateConfig,
    RunReport,
    evaluate_gates,
    load_baseline,
    run_gate,
    stratified_sample,
)
from ragtriage.runtime import build

_RUNS: list[GateReport] = []


@dataclass
class GateReport:
    """A finished gate run: the outcomes, the gate checks and a markdown summary."""

    run: RunReport
    checks: list[GateCheck]
    summary: str

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def assert_passed(self) -> None:
        if not self.passed:
            failed = ", ".join(c.name for c in self.checks if not c.passed)
            raise AssertionError(f"ragtriage gate failed ({failed})\n{self.summary}")


@dataclass
class GateRunner:
    """What the fixture returns; ``evaluator`` defaults to the env config (``RAGTRIAGE_*``), like the CLI.

    Alerts the run raises go into the report's notes; they reach the configured sinks only with
    ``send_alerts=True`` (or ``--ragtriage-send-alerts`` on the pytest command line)."""

    evaluator: RAGEvaluator | None = None
    send_alerts: bool = False
    reports: list[GateReport] = field(default_factory=list)

    async def arun(
        self,
        dataset: str | Path | list[Item],
        *,
        n: int = 50,
        adversarial_share: float = 0.0,
        budget_usd: float | None = None,
        time_limit_s: float | None = None,
        baseline: str | Path | None = None,
        concurrency: int = 4,
        seed: int = 0,
        **gates: Any,
    ) -> GateReport:
        """Run the gate from an async test; ``gates`` are :class:`GateConfig` fields (``min_pass_rate=...``)."""
        items = dataset if isinstance(dataset, list) else load_dataset(dataset)
        sample, notes = stratified_sample(items, n, adversarial_share=adversarial_share, seed=seed)
        runtime = build(Config.from_env(), "offline", evaluator=self.evaluator, send_alerts=self.send_alerts)
        assert runtime.evaluator is not None
        try:
            run = await run_gate(
                runtime.evaluator, sample, budget_usd=budget_usd, time_limit_s=time_limit_s, concurrency=concurrency
            )
        finally:
            if self.evaluator is None:
                await runtime.aclose()
            elif runtime.alerts is not None:  # your evaluator stays open; this run's alerts are done
                self.evaluator.remove_observer(runtime.alerts.observe)
                await runtime.alerts.tick()
                await runtime.alerts.aclose()
        run.notes += notes + alert_notes(runtime, self.send_alerts)
        base = load_baseline(baseline) if baseline is not None else None
        checks = evaluate_gates(run, GateConfig(**gates), base)
        report = GateReport(run, checks, markdown(run, checks, base))
        self.reports.append(report)
        _RUNS.append(report)
        return report

    def run(self, dataset: str | Path | list[Item], **kwargs: Any) -> GateReport:
        """Run the gate from a sync test."""
        return asyncio.run(self.arun(dataset, **kwargs))


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--ragtriage-send-alerts",
        action="store_true",
        default=False,
        help="ragtriage gate: send the alerts a gate run raises to the configured sinks (default: report only).",
    )


@pytest.fixture
def ragtriage_gate(request: pytest.FixtureRequest) -> GateRunner:
    """A :class:`GateRunner`; set ``ragtriage_gate.evaluator`` to use your own RAGEvaluator."""
    return GateRunner(send_alerts=bool(request.config.getoption("--ragtriage-send-alerts")))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per gate run, so a passing gate's numbers are still visible in the CI log."""
    if not _RUNS:
        return
    terminalreporter.section("ragtriage gate")
    for report in _RUNS:
        first = report.summary.splitlines()[2] if len(report.summary.splitlines()) > 2 else ""
        terminalreporter.write_line(f"{'PASSED' if report.passed else 'FAILED'}: {first}")
