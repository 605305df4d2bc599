"""A first run: what a newcomer can import, and what they are told when nothing is sampled (the demo: test_demo)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

import ragtriage
from ragtriage.instrumentation import installed_processor
from ragtriage.intake.sampling import TRACE_ID_MASK
from tests.test_span_processor import rag_request


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    ragtriage.uninstrument()


class ChosenTraceIds(IdGenerator):
    """Trace ids whose low 64 bits sample (``sampled=True``) or not at any rate below 1."""

    def __init__(self) -> None:
        self.sampled = False
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        high = self._random.generate_trace_id() & ~TRACE_ID_MASK
        return high | (1 if self.sampled else TRACE_ID_MASK)


def nothing_sampled_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "was sampled" in r.getMessage() and r.levelno == logging.INFO]


def test_installed_processor_is_exported_from_the_package() -> None:
    assert "installed_processor" in ragtriage.__all__
    assert ragtriage.installed_processor is installed_processor
    assert ragtriage.installed_processor() is None
    ragtriage.instrument(tracer_provider=TracerProvider(), write_back=False, auto_instrument=False)
    processor = ragtriage.installed_processor()
    assert isinstance(processor, ragtriage.EvalSpanProcessor)


def test_many_traces_and_none_sampled_is_said_once_naming_sample_rate(caplog: pytest.LogCaptureFixture) -> None:
    ids = ChosenTraceIds()
    provider = TracerProvider(id_generator=ids)
    ragtriage.instrument(tracer_provider=provider, sample_rate=0.1, write_back=False, auto_instrument=False)
    with caplog.at_level(logging.INFO, logger="ragtriage"):
        for _ in range(19):
            rag_request(provider)
        assert nothing_sampled_lines(caplog) == []  # a few traces: too early to say
        rag_request(provider)
        [line] = nothing_sampled_lines(caplog)
        assert "none of the first 20 traces" in line and "sample_rate=0.1" in line
        assert "sample_rate=1.0 (RAGTRIAGE_SAMPLE_RATE)" in line
        for _ in range(100):
            rag_request(provider)
    assert len(nothing_sampled_lines(caplog)) == 1
    processor = ragtriage.installed_processor()
    assert processor is not None and processor.stats["traces_not_sampled"] == 120


def test_nothing_is_said_once_a_trace_was_sampled(caplog: pytest.LogCaptureFixture) -> None:
    ids = ChosenTraceIds()
    provider = TracerProvider(id_generator=ids)
    ragtriage.instrument(tracer_provider=provider, sample_rate=0.1, write_back=False, auto_instrument=False)
    with caplog.at_level(logging.INFO, logger="ragtriage"):
        ids.sampled = True
        rag_request(provider)
        ids.sampled = False
        for _ in range(50):
            rag_request(provider)
    assert nothing_sampled_lines(caplog) == []
    processor = ragtriage.installed_processor()
    assert processor is not None and processor.force_flush(30_000)
    assert (processor.stats["traces_sampled"], processor.stats["traces_not_sampled"]) == (1, 50)
