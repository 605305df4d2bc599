"""Gate inside pytest: opt in with ``pytest_plugins = ["ragtriage.testing.pytest_plugin"]`` in a conftest.

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

from ragtriage.evaluator import RAGEvaluator
from ragtriage.testing.datasets import Item, load_dataset
from ragtriage.testing.gate import (
    GateCheck,
    GateConfig,
    RunReport,
    evaluate_gates,
    load_baseline,
    run_gate,
    stratified_sample,
)
from ragtriage.testing.gate_output import markdown

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
    """What the fixture returns; ``evaluator`` defaults to the env config (``RAGTRIAGE_*``), like the CLI."""

    evaluator: RAGEvaluator | None = None
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
        evaluator = self.evaluator or _from_env()
        run = await run_gate(
            evaluator, sample, budget_usd=budget_usd, time_limit_s=time_limit_s, concurrency=concurrency
        )
        if self.evaluator is None:
            await evaluator.aclose()
        run.notes += notes
        base = load_baseline(baseline) if baseline is not None else None
        checks = evaluate_gates(run, GateConfig(**gates), base)
        report = GateReport(run, checks, markdown(run, checks, base))
        self.reports.append(report)
        _RUNS.append(report)
        return report

    def run(self, dataset: str | Path | list[Item], **kwargs: Any) -> GateReport:
        """Run the gate from a sync test."""
        return asyncio.run(self.arun(dataset, **kwargs))


def _from_env() -> RAGEvaluator:
    from ragtriage.config import Config
    from ragtriage.instrumentation import build_evaluator

    return build_evaluator(Config.from_env(sample_rate=1.0))


@pytest.fixture
def ragtriage_gate() -> GateRunner:
    """A :class:`GateRunner`; set ``ragtriage_gate.evaluator`` to use your own RAGEvaluator."""
    return GateRunner()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per gate run, so a passing gate's numbers are still visible in the CI log."""
    if not _RUNS:
        return
    terminalreporter.section("ragtriage gate")
    for report in _RUNS:
        first = report.summary.splitlines()[2] if len(report.summary.splitlines()) > 2 else ""
        terminalreporter.write_line(f"{'PASSED' if report.passed else 'FAILED'}: {first}")
