"""LangChain through openinference-instrumentation-langchain: LCEL, create_retrieval_chain, history-aware chains,
RunnableParallel, LangGraph, and an HTTP server span above a chain. Fake models only (FakeListChatModel)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

pytest.importorskip("langchain_core", reason="the test-frameworks extra is not installed (langchain-core)")
pytest.importorskip("openinference.instrumentation.langchain", reason="openinference-instrumentation-langchain")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableParallel, RunnablePassthrough
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import Field

from tests.frameworks.conftest import (
    ANSWERS,
    CONTEXTS,
    FAITHFUL,
    QUESTION,
    Harness,
    Run,
    assert_judged,
    assert_on_root,
    instrument,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the instrumentor's, on LangChain 1.x
IDS = ["doc-paris", "doc-lyon"]
SCORES = [0.92, 0.41]


class ListRetriever(BaseRetriever):
    """An in-memory retriever of fixed documents with ids, and scores as metadata (where LangChain keeps them)."""

    texts: list[str]
    queries: list[str] = Field(default_factory=list)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        self.queries.append(query)
        return [
            Document(page_content=t, id=i, metadata={"score": s})
            for t, i, s in zip(self.texts, IDS, SCORES, strict=True)
        ]


@pytest.fixture(scope="module", autouse=True)
def instrumented(harness: Harness) -> Iterator[None]:
    instrumentor = LangChainInstrumentor()
    instrument(instrumentor, harness.provider)
    yield
    instrumentor.uninstrument()


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(d.page_content for d in docs)


PROMPT = ChatPromptTemplate.from_messages([("system", "Answer from the context:\n{context}"), ("human", "{question}")])


def lcel(answer: str):
    retriever = ListRetriever(texts=CONTEXTS)
    llm = FakeListChatModel(responses=[answer] * 8)
    return {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | llm | StrOutputParser()


def check(run: Run, answer: str, question: str = QUESTION) -> None:
    sample = run.sample
    assert (sample.question, sample.answer, sample.contexts) == (question, answer, CONTEXTS)
    assert [(d.id, d.score) for d in sample.documents] == list(zip(IDS, SCORES, strict=True))
    assert_on_root(run)
    assert_judged(run, answer)


@ANSWERS
def test_lcel_invoke(harness: Harness, answer: str) -> None:
    chain = lcel(answer)
    check(harness.run(lambda: chain.invoke(QUESTION)), answer)


@ANSWERS
def test_lcel_stream(harness: Harness, answer: str) -> None:
    chain = lcel(answer)
    chunks: list[str] = []
    run = harness.run(lambda: chunks.extend(chain.stream(QUESTION)))
    assert "".join(chunks) == answer
    check(run, answer)


@ANSWERS
def test_lcel_ainvoke(harness: Harness, answer: str) -> None:
    chain = lcel(answer)
    check(harness.run(lambda: asyncio.run(chain.ainvoke(QUESTION))), answer)


def test_lcel_batch_is_one_sample_per_input(harness: Harness) -> None:
    questions = [QUESTION, "Which city is the capital of France?"]
    chain = lcel(FAITHFUL)
    run = harness.run(lambda: chain.batch(questions))
    assert len(run.roots) == 2
    assert sorted(s.question for s, _ in run.results) == sorted(questions)
    assert all(s.answer == FAITHFUL and s.contexts == CONTEXTS for s, _ in run.results)
    assert_on_root(run)


@ANSWERS
def test_create_retrieval_chain_reads_the_answer_not_the_output_dict(harness: Harness, answer: str) -> None:
    """The chain's output is {"input", "context", "answer"}; the root's output.value is all of it as JSON."""
    pytest.importorskip("langchain_classic", reason="langchain-classic (create_retrieval_chain) is not installed")
    from langchain_classic.chains import create_retrieval_chain
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain

    prompt = ChatPromptTemplate.from_messages([("system", "Answer from the context:\n{context}"), ("human", "{input}")])
    chain = create_retrieval_chain(
        ListRetriever(texts=CONTEXTS), create_stuff_documents_chain(FakeListChatModel(responses=[answer]), prompt)
    )
    output: dict = {}
    run = harness.run(lambda: output.update(chain.invoke({"input": QUESTION})))
    assert output["answer"] == answer
    assert run.roots[0].attributes["output.value"].startswith('{"input"')  # the shape that was misread
    check(run, answer)


@ANSWERS
def test_history_aware_retriever_takes_the_current_turn_and_keeps_the_history(harness: Harness, answer: str) -> None:
    pytest.importorskip("langchain_classic", reason="langchain-classic (create_retrieval_chain) is not installed")
    from langchain_classic.chains import create_history_aware_retriever, create_retrieval_chain
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain

    rephrased = "capital city of France"
    retriever = ListRetriever(texts=CONTEXTS, queries=[])
    rephrase = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("chat_history"), ("human", "{input}"), ("human", "Rephrase that as a search query.")]
    )
    history_aware = create_history_aware_retriever(FakeListChatModel(responses=[rephrased]), retriever, rephrase)
    qa = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context:\n{context}"), MessagesPlaceholder("chat_history"), ("human", "{input}")]
    )
    chain = create_retrieval_chain(
        history_aware, create_stuff_documents_chain(FakeListChatModel(responses=[answer]), qa)
    )
    turn = "And what is its capital?"
    history = [HumanMessage("Tell me about France."), AIMessage("France is a country in Western Europe.")]
    run = harness.run(lambda: chain.invoke({"input": turn, "chat_history": history}))
    assert retriever.queries == [rephrased]  # the search ran on the rephrased query ...
    check(run, answer, question=turn)  # ... but the question judged is the user's turn
    assert run.sample.history == [
        {"role": "user", "content": "Tell me about France."},
        {"role": "assistant", "content": "France is a country in Western Europe."},
    ]


@ANSWERS
def test_runnable_parallel_returning_a_dict_with_the_answer(harness: Harness, answer: str) -> None:
    retriever = ListRetriever(texts=CONTEXTS)
    llm = FakeListChatModel(responses=[answer])
    answer_chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | llm
    chain = RunnableParallel(answer=answer_chain | StrOutputParser(), sources=retriever)
    run = harness.run(lambda: chain.invoke(QUESTION))
    # Two retriever calls of the same documents: one context each, not two.
    assert run.kinds().count("RETRIEVER") == 2
    check(run, answer)


@ANSWERS
def test_chain_ending_in_a_chat_model_gives_the_message_content(harness: Harness, answer: str) -> None:
    """No output parser: the root's output.value is the AIMessage as LangChain's JSON message dict."""
    retriever = ListRetriever(texts=CONTEXTS)
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT
    chain = chain | FakeListChatModel(responses=[answer])
    run = harness.run(lambda: chain.invoke(QUESTION))
    assert run.roots[0].attributes["output.value"].startswith('{"type": "ai"')
    check(run, answer)


@ANSWERS
def test_langgraph_rag_graph(harness: Harness, answer: str) -> None:
    pytest.importorskip("langgraph", reason="langgraph is not installed")
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    retriever = ListRetriever(texts=CONTEXTS)
    llm = FakeListChatModel(responses=[answer])

    class State(TypedDict, total=False):
        question: str
        context: list[Document]
        answer: str

    def retrieve(state: State) -> State:
        return {"context": retriever.invoke(state["question"])}

    def generate(state: State) -> State:
        messages = PROMPT.invoke({"context": format_docs(state["context"]), "question": state["question"]})
        return {"answer": str(llm.invoke(messages).content)}

    graph = StateGraph(State)
    graph.add_node("retrieve", retrieve)
    graph.add_node("generate", generate)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "generate")
    graph.add_edge("generate", END)
    app = graph.compile()
    check(harness.run(lambda: app.invoke({"question": QUESTION})), answer)


@pytest.mark.parametrize("remote_parent", [False, True], ids=["server-root", "server-under-remote-parent"])
@ANSWERS
def test_http_server_span_above_the_chain(harness: Harness, answer: str, remote_parent: bool) -> None:
    """What the FastAPI/Flask instrumentations create: a SERVER span with http.* attributes and no OpenInference
    kind is the local root (under the caller's remote span when a traceparent came in); scores go on it."""
    pytest.importorskip("langchain_classic", reason="langchain-classic (create_retrieval_chain) is not installed")
    from langchain_classic.chains import create_retrieval_chain
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain

    prompt = ChatPromptTemplate.from_messages([("system", "Answer from the context:\n{context}"), ("human", "{input}")])
    chain = create_retrieval_chain(
        ListRetriever(texts=CONTEXTS), create_stuff_documents_chain(FakeListChatModel(responses=[answer]), prompt)
    )
    tracer = harness.provider.get_tracer("opentelemetry.instrumentation.fastapi")
    parent = None
    if remote_parent:
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        remote = trace.SpanContext(0x5CE1E5CE1E5CE1E5CE1E5CE1E5CE1E5, 0xCA11E2, is_remote=True, trace_flags=flags)
        parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    attributes = {"http.request.method": "POST", "http.route": "/ask", "url.path": "/ask", "url.scheme": "http",
                  "server.address": "127.0.0.1", "http.response.status_code": 200}  # fmt: skip

    def app() -> None:
        with tracer.start_as_current_span("POST /ask", context=parent, kind=SpanKind.SERVER, attributes=attributes):
            chain.invoke({"input": QUESTION})

    run = harness.run(app)
    [root] = run.roots
    assert root.kind is SpanKind.SERVER and "openinference.span.kind" not in root.attributes
    check(run, answer)


@ANSWERS
def test_langgraph_messages_state_conversation(harness: Harness, answer: str) -> None:
    """LangGraph's MessagesState: the graph's input and output are the whole conversation as LangChain messages."""
    pytest.importorskip("langgraph", reason="langgraph is not installed")
    from langchain_core.messages import SystemMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    retriever = ListRetriever(texts=CONTEXTS)
    llm = FakeListChatModel(responses=[answer])

    class State(MessagesState):
        context: list[Document]

    def retrieve(state: State) -> dict:
        return {"context": retriever.invoke(str(state["messages"][-1].content))}

    def generate(state: State) -> dict:
        system = SystemMessage("Answer from the context:\n" + format_docs(state["context"]))
        return {"messages": [llm.invoke([system, *state["messages"]])]}

    graph = StateGraph(State)
    graph.add_node("retrieve", retrieve)
    graph.add_node("generate", generate)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "generate")
    graph.add_edge("generate", END)
    app = graph.compile()
    history = [HumanMessage("Tell me about France."), AIMessage("France is a country in Western Europe.")]
    run = harness.run(lambda: app.invoke({"messages": [*history, HumanMessage(QUESTION)]}))
    check(run, answer)
    assert run.sample.history == [
        {"role": "user", "content": "Tell me about France."},
        {"role": "assistant", "content": "France is a country in Western Europe."},
    ]
