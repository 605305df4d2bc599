"""DSPy through openinference-instrumentation-dspy: a RAG module (dspy.Retrieve over a retrieval model, then
ChainOfThought), on DSPy's own DummyLM; no network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("dspy", reason="the test-frameworks extra is not installed (dspy)")
pytest.importorskip("openinference.instrumentation.dspy", reason="openinference-instrumentation-dspy")

import dspy
from dspy.dsp.utils import dotdict
from dspy.utils import DummyLM
from openinference.instrumentation.dspy import DSPyInstrumentor

from tests.frameworks.conftest import ANSWERS, CONTEXTS, QUESTION, Harness, assert_judged, assert_on_root, instrument


def retrieval_model(query: str, k: int = 3, **kwargs: Any) -> list[dotdict]:
    """What dspy.Retrieve calls (``dspy.settings.rm``): passages with ``long_text``."""
    return [dotdict(long_text=text) for text in CONTEXTS[:k]]


class RAG(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.retrieve = dspy.Retrieve(k=2)
        self.generate = dspy.ChainOfThought("context, question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        context = self.retrieve(question).passages
        return self.generate(context=context, question=question)


@pytest.fixture(scope="module", autouse=True)
def instrumented(harness: Harness) -> Iterator[None]:
    instrumentor = DSPyInstrumentor()
    instrument(instrumentor, harness.provider)
    yield
    instrumentor.uninstrument()


@ANSWERS
def test_rag_module(harness: Harness, answer: str) -> None:
    lm = DummyLM([{"reasoning": "The first passage says which city it is.", "answer": answer}])
    predictions: list[dspy.Prediction] = []
    with dspy.context(lm=lm, rm=retrieval_model):
        run = harness.run(lambda: predictions.append(RAG()(question=QUESTION)))
    assert predictions[0].answer == answer
    sample = run.sample
    # The answer field, not the module's whole output {"reasoning": ..., "answer": ...}.
    assert (sample.question, sample.answer, sample.contexts) == (QUESTION, answer, CONTEXTS)
    assert [d.id for d in sample.documents] == [None, None]  # dspy.Retrieve passes on text only
    assert_on_root(run)
    assert_judged(run, answer)
