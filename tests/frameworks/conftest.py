"""The conformance suite's harness: a real TracerProvider, ragtriage.instrument() on it, an in-memory exporter.

Each framework module instruments its framework's real OpenInference instrumentor on the harness's provider once,
runs the app with the framework's own fake models, and checks what ragtriage read against what the app used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import ragtriage
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.sample import RAGSample

QUESTION = "What is the capital of France?"
CONTEXTS = ["Paris is the capital and largest city of France.", "Lyon is a large city in the south-east of France."]
FAITHFUL = "Paris is the capital of France."
#: Every content word of it is in no context: the free deterministic tier fails it.
HALLUCINATED = "Berlin became the capital of France after the Congress of Vienna in 1815."
ANSWERS = pytest.mark.parametrize("answer", [FAITHFUL, HALLUCINATED], ids=["faithful", "hallucinated"])


@dataclass
class Run:
    """What one call of the app produced: the evaluated samples with their results, and the exported spans."""

    results: list[tuple[RAGSample, RAGEvaluationResult]]
    spans: list[ReadableSpan]

    @property
    def roots(self) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent is None or s.parent.is_remote]

    @property
    def sample(self) -> RAGSample:
        assert len(self.results) == 1, f"expected one evaluated sample, got {len(self.results)}"
        return self.results[0][0]

    @property
    def result(self) -> RAGEvaluationResult:
        assert len(self.results) == 1, f"expected one evaluated sample, got {len(self.results)}"
        return self.results[0][1]

    def kinds(self) -> list[str | None]:
        return [(s.attributes or {}).get("openinference.span.kind") for s in self.spans]


class Harness:
    """One provider per test module, with ragtriage installed on it (sample rate 1, no write-back)."""

    def __init__(self) -> None:
        self.provider = TracerProvider()
        self.exporter = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self._results: list[tuple[RAGSample, RAGEvaluationResult]] = []
        self._lock = threading.Lock()
        ragtriage.instrument(
            tracer_provider=self.provider, sample_rate=1.0, write_back=False, auto_instrument=False,
            on_result=self._on_result,
        )  # fmt: skip

    def _on_result(self, sample: RAGSample, result: RAGEvaluationResult) -> None:
        with self._lock:
            self._results.append((sample, result))

    def run(self, app: Callable[[], Any]) -> Run:
        """Run the app, wait for its evaluations, and hand back what came out."""
        self.exporter.clear()
        with self._lock:
            self._results.clear()
        app()
        assert self.provider.force_flush(20_000)
        with self._lock:
            results = list(self._results)
        return Run(results, list(self.exporter.get_finished_spans()))

    def close(self) -> None:
        ragtriage.uninstrument()
        self.provider.shutdown()


def instrument(instrumentor: Any, provider: TracerProvider) -> None:
    """An OpenInference instrumentor on this provider. Instrumentors are process-wide singletons that ignore a
    second ``instrument()``: one left on by another test (``auto_instrument=True``) is taken off first."""
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=provider)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def assert_on_root(run: Run) -> None:
    """The scores land on the right span: each sample names the trace and the local root span the app exported."""
    roots = {(r.context.trace_id, r.context.span_id) for r in run.roots}
    assert {(s.trace_id, s.root_span_id) for s, _ in run.results} == roots


def assert_judged(run: Run, answer: str) -> None:
    """A faithful answer passes the free deterministic tier, a hallucinated one fails it: the contexts reached it."""
    result = run.result
    assert result.status == "ok", result
    if answer == HALLUCINATED:
        # the free tiers' fail names a fact of the answer found in no context: the contexts reached them
        assert result.verdict == "fail" and result.tier == "deterministic", result
        assert "found in no context" in result.tiers[0].detail, result
    else:
        assert result.verdict != "fail" and result.tier_scores["deterministic"] == 1.0, result
