"""A plain OpenAI-SDK app: openinference-instrumentation-openai on the SDK (real HTTP to a loopback server), the
retrievers and the reranker traced by hand with openinference-instrumentation's tracer helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("openinference.instrumentation.openai", reason="openinference-instrumentation-openai")

import openai
from openinference.instrumentation import OITracer, TraceConfig, get_reranker_attributes, get_retriever_attributes
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.trace import SpanKind

from tests.frameworks.conftest import (
    ANSWERS,
    CONTEXTS,
    QUESTION,
    Harness,
    Run,
    assert_judged,
    assert_on_root,
    instrument,
)
from tests.frameworks.openai_server import OpenAIServer

NOISE = "The capital of Australia is Canberra, not Sydney."
KEYWORD_HITS = [
    {"id": "doc-paris", "content": CONTEXTS[0], "score": 7.5},
    {"id": "noise", "content": NOISE, "score": 2.0},
]
VECTOR_HITS = [
    {"id": "doc-lyon", "content": CONTEXTS[1], "score": 0.83},
    {"id": "doc-paris", "content": CONTEXTS[0], "score": 0.81},
]
RERANKED = [
    {"id": "doc-paris", "content": CONTEXTS[0], "score": 0.97},
    {"id": "doc-lyon", "content": CONTEXTS[1], "score": 0.64},
]


@pytest.fixture(scope="module")
def server(harness: Harness) -> Iterator[OpenAIServer]:
    instrumentor = OpenAIInstrumentor()
    instrument(instrumentor, harness.provider)
    with OpenAIServer() as s:
        yield s
    instrumentor.uninstrument()


class App:
    """Keyword search + vector search, a reranker, then one chat completion; every step traced."""

    def __init__(self, harness: Harness, server: OpenAIServer, *, rerank: bool, set_output: bool, stream: bool) -> None:
        self.tracer = OITracer(harness.provider.get_tracer("rag-app"), TraceConfig())
        self.client = openai.OpenAI(base_url=server.url, api_key="sk-loopback", max_retries=0)
        self.rerank, self.set_output, self.stream = rerank, set_output, stream

    def search(self, name: str, question: str, hits: list[dict]) -> list[dict]:
        with self.tracer.start_as_current_span(name, openinference_span_kind="retriever") as span:
            span.set_input(question)
            span.set_attributes(get_retriever_attributes(documents=hits))  # type: ignore[arg-type]
        return hits

    def __call__(self, question: str) -> str:
        with self.tracer.start_as_current_span("answer", openinference_span_kind="chain") as root:
            root.set_input(question)
            hits = self.search("keyword-search", question, KEYWORD_HITS) + self.search(
                "vector-search", question, VECTOR_HITS
            )
            if self.rerank:
                with self.tracer.start_as_current_span("rerank", openinference_span_kind="reranker") as span:
                    span.set_attributes(get_reranker_attributes(
                        query=question, model_name="cross-encoder", input_documents=hits, output_documents=RERANKED,  # type: ignore[arg-type]
                        top_k=2,
                    ))  # fmt: skip
                hits = RERANKED
            context = "\n\n".join(dict.fromkeys(h["content"] for h in hits))
            messages = [
                {"role": "system", "content": f"Answer from the context.\n\n{context}"},
                {"role": "user", "content": question},
            ]
            if self.stream:
                chunks = self.client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
                answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                reply = self.client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                answer = reply.choices[0].message.content or ""
            if self.set_output:
                root.set_output(answer)
            return answer


def check(run: Run, answer: str, documents: list[dict]) -> None:
    sample = run.sample
    assert (sample.question, sample.answer) == (QUESTION, answer)
    assert [(d.id, d.content, d.score) for d in sample.documents] == [
        (h["id"], h["content"], h["score"]) for h in documents
    ]
    assert_on_root(run)
    assert_judged(run, answer)


@ANSWERS
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_reranked_contexts_replace_the_retrieved_ones(
    harness: Harness, server: OpenAIServer, answer: str, stream: bool
) -> None:
    server.reply = answer
    app = App(harness, server, rerank=True, set_output=True, stream=stream)
    out: list[str] = []
    run = harness.run(lambda: out.append(app(QUESTION)))
    assert out == [answer]
    assert "LLM" in run.kinds() and run.kinds().count("RETRIEVER") == 2
    check(run, answer, RERANKED)


@ANSWERS
def test_two_retrievers_deduplicated_by_id_in_order_and_the_llm_gives_the_answer(
    harness: Harness, server: OpenAIServer, answer: str
) -> None:
    """No reranker, and the root records no output: the answer is the LLM span's output message."""
    server.reply = answer
    app = App(harness, server, rerank=False, set_output=False, stream=False)
    run = harness.run(lambda: app(QUESTION))
    assert "output.value" not in run.roots[0].attributes
    # doc-paris twice (keyword, then vector): the first one is kept, with the keyword search's score
    check(run, answer, [KEYWORD_HITS[0], KEYWORD_HITS[1], VECTOR_HITS[0]])


@ANSWERS
def test_under_an_http_server_span(harness: Harness, server: OpenAIServer, answer: str) -> None:
    server.reply = answer
    app = App(harness, server, rerank=True, set_output=True, stream=False)
    tracer = harness.provider.get_tracer("opentelemetry.instrumentation.flask")
    attributes = {"http.request.method": "GET", "http.route": "/ask", "http.response.status_code": 200}

    def request() -> None:
        with tracer.start_as_current_span("GET /ask", kind=SpanKind.SERVER, attributes=attributes):
            app(QUESTION)

    run = harness.run(request)
    assert run.roots[0].kind is SpanKind.SERVER
    check(run, answer, RERANKED)
