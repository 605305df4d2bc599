"""A FastAPI app served by uvicorn on loopback, instrumented by opentelemetry-instrumentation-fastapi: its SERVER
span (http.* attributes, no OpenInference kind) is the local root above a LangChain retrieval chain, also under
a remote parent when the request carries a ``traceparent``. Real HTTP from the test to the server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed")
pytest.importorskip("uvicorn", reason="uvicorn is not installed")
pytest.importorskip("opentelemetry.instrumentation.fastapi", reason="opentelemetry-instrumentation-fastapi")
pytest.importorskip("langchain_classic", reason="langchain-classic (create_retrieval_chain) is not installed")
pytest.importorskip("openinference.instrumentation.langchain", reason="openinference-instrumentation-langchain")

import httpx
import uvicorn
from fastapi import FastAPI
from langchain_classic.chains import create_retrieval_chain
from langchain_classic.chains.combine_documents import create_stuff_documents_chain
from langchain_core.language_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from tests.frameworks.conftest import ANSWERS, CONTEXTS, QUESTION, Harness, assert_judged, assert_on_root, instrument
from tests.frameworks.test_langchain import IDS, SCORES, ListRetriever

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Ask(BaseModel):
    question: str


class Server:
    """The app on 127.0.0.1 (a free port), in a uvicorn thread; ``answer`` is what its fake chat model says."""

    def __init__(self, harness: Harness) -> None:
        self.answer = ""
        app = FastAPI()
        prompt = ChatPromptTemplate.from_messages(
            [("system", "Answer from the context:\n{context}"), ("human", "{input}")]
        )

        @app.post("/ask")
        async def ask(body: Ask) -> dict[str, str]:
            llm = FakeListChatModel(responses=[self.answer])
            chain = create_retrieval_chain(ListRetriever(texts=CONTEXTS), create_stuff_documents_chain(llm, prompt))
            out = await chain.ainvoke({"input": body.question})
            return {"answer": out["answer"]}

        FastAPIInstrumentor.instrument_app(app, tracer_provider=harness.provider)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(harness: Harness) -> Iterator[Server]:
    instrumentor = LangChainInstrumentor()
    instrument(instrumentor, harness.provider)
    with Server(harness) as s:
        yield s
    instrumentor.uninstrument()


@pytest.mark.parametrize("traceparent", [None, "00-5ce1e5ce1e5ce1e5ce1e5ce1e5ce1e50-00000000000ca112-01"])
@ANSWERS
def test_fastapi_server_span_is_the_root(
    harness: Harness, server: Server, answer: str, traceparent: str | None
) -> None:
    server.answer = answer
    headers = {"traceparent": traceparent} if traceparent else {}

    def request() -> None:
        reply = httpx.post(f"{server.url}/ask", json={"question": QUESTION}, headers=headers, timeout=10)
        assert reply.json() == {"answer": answer}
        deadline = time.monotonic() + 5  # the server span ends after the response has been sent
        while not any(s.kind is SpanKind.SERVER for s in harness.exporter.get_finished_spans()):
            assert time.monotonic() < deadline, "the server span never ended"
            time.sleep(0.01)

    run = harness.run(request)
    [root] = run.roots
    assert root.kind is SpanKind.SERVER and "openinference.span.kind" not in root.attributes
    assert root.attributes["http.route"] == "/ask"
    if traceparent:
        assert root.parent is not None and root.parent.is_remote and root.context.trace_id == int(traceparent[3:35], 16)
    sample = run.sample
    assert (sample.question, sample.answer, sample.contexts) == (QUESTION, answer, CONTEXTS)
    assert [(d.id, d.score) for d in sample.documents] == list(zip(IDS, SCORES, strict=True))
    assert_on_root(run)
    assert_judged(run, answer)
