"""Conversations end to end: a three-turn chat traced by each framework's real OpenInference instrumentor
(a LangChain history-aware chain, a LangGraph MessagesState graph, a LlamaIndex condense_plus_context chat
engine), its last question only understandable with its history.

The judge is the loopback OpenAI-compatible server, scripted as a judge would reason: "And what does it cost?"
is relevant only when the conversation says what "it" is. The turns carry ``session.id``; once the session is
idle, its scores are read back from a real ``phoenix serve`` and seen in Phoenix's own Sessions view, rendered by
headless Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("langchain_core", reason="the test-frameworks extra is not installed (langchain-core)")
pytest.importorskip("llama_index.core", reason="the test-frameworks extra is not installed (llama-index-core)")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import ragtriage
from ragtriage.evaluator.cache import MemoryCache
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.export.sessions import SESSION_ANNOTATIONS
from ragtriage.instrumentation.instrument import installed_runtime
from ragtriage.sample import RAGSample
from ragtriage.testing import JudgeServer, Reply, verdict_json
from ragtriage.testing.phoenix import PhoenixServer
from tests.frameworks.conftest import instrument

pytestmark = pytest.mark.phoenix

CONTEXTS = [
    "The Acme Pro plan costs $49 per month and includes single sign-on and audit logs.",
    "The Acme Basic plan is free for up to three users.",
]
TURNS = [
    ("Which plans does Acme offer?", "Acme offers a Basic plan and a Pro plan."),
    # a name in no context: the free tiers ask the judge to check it, and the judge fails the turn
    ("Tell me about the Pro plan.", "The Pro plan includes single sign-on, audit logs and a Zorblax licence."),
    ("And what does it cost?", "It costs $49 per month."),
]
FOLLOW_UP = TURNS[2][0]
#: Longer than the gap between two turns of the conversation on a loaded machine (each turn runs the framework
#: and waits for its evaluation), so the three turns are one stretch of the session.
IDLE_S = 5.0


def judge_reply(body: dict[str, Any]) -> Reply:
    """The loopback judge, reasoning as the prompt asks: a follow-up is understood through the conversation."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if system.startswith("You read one conversation"):
        return Reply(json.dumps({"resolved": True, "score": 0.9, "reason": "the user learned the Pro plan's price"}))
    question = re.search(r"QUESTION>>>\n(.*?)\n<<<END", user, re.DOTALL)
    conversation = re.search(r"CONVERSATION>>>\n(.*?)\n<<<END", user, re.DOTALL)
    asked = question.group(1) if question else ""
    understood = asked != FOLLOW_UP or (conversation is not None and "Pro plan" in conversation.group(1))
    relevance = 0.95 if understood else 0.2
    reasons = "answers the question" if understood else "'it' refers to nothing the question names"
    to_check = re.search(r"TO CHECK>>>\n(.*?)\n<<<END", user, re.DOTALL)
    invented = to_check is not None and "Zorblax" in to_check.group(1)  # the contexts support it in no wording
    faithfulness = 0.2 if invented else 0.9
    n = user.count(" CONTEXT ")
    documents = [{"index": i, "relevance": 0.9} for i in range(1, n + 1)]
    return Reply(
        verdict_json(
            faithfulness=faithfulness, relevance=relevance, confidence=0.95, reasons=reasons, documents=documents
        )
    )


class Chat:
    """What the instrumented app produced: every evaluated turn, by session."""

    def __init__(self) -> None:
        self.results: list[tuple[RAGSample, RAGEvaluationResult]] = []
        self._lock = threading.Lock()

    def on_result(self, sample: RAGSample, result: RAGEvaluationResult) -> None:
        with self._lock:
            self.results.append((sample, result))

    def of(
        self, session_id: str | None, n: int, timeout_s: float = 30.0
    ) -> list[tuple[RAGSample, RAGEvaluationResult]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = [(s, r) for s, r in self.results if s.session_id == session_id]
            if len(found) >= n:
                return sorted(found, key=lambda sr: sr[0].ended_at)
            time.sleep(0.05)
        raise AssertionError(f"{len(found)} of {n} turns of session {session_id!r} evaluated")


@pytest.fixture(scope="module")
def judge() -> Iterator[JudgeServer]:
    with JudgeServer(default=judge_reply) as server:
        yield server


@pytest.fixture(scope="module")
def app(phoenix: PhoenixServer, judge: JudgeServer) -> Iterator[tuple[TracerProvider, Chat, str]]:
    """The app's provider (OTLP to Phoenix, so Phoenix has the sessions), ragtriage on it, both instrumentors."""
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

    project = f"conversations-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces")))
    chat = Chat()
    ragtriage.instrument(
        tracer_provider=provider, endpoint=phoenix.url, sample_rate=1.0, local_judge_url=judge.url,
        auto_instrument=False, on_result=chat.on_result, session_idle_s=IDLE_S, session_judge=True,
    )  # fmt: skip
    instrumentors = [LangChainInstrumentor(), LlamaIndexInstrumentor()]
    for instrumentor in instrumentors:
        instrument(instrumentor, provider)
    yield provider, chat, project
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
    ragtriage.uninstrument()
    provider.shutdown()


class ListRetriever(BaseRetriever):
    texts: list[str]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=t) for t in self.texts]


def langchain_conversation(session_id: str, turns: list[tuple[str, str]]) -> None:
    """create_history_aware_retriever + create_retrieval_chain, the chat history passed in as LangChain does."""
    from langchain_classic.chains import create_history_aware_retriever, create_retrieval_chain
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain

    history: list[BaseMessage] = []
    for question, answer in turns:
        rephrase = ChatPromptTemplate.from_messages(
            [MessagesPlaceholder("chat_history"), ("human", "{input}"), ("human", "Rephrase as a search query.")]
        )
        retriever = create_history_aware_retriever(
            FakeListChatModel(responses=["Acme plans"]), ListRetriever(texts=CONTEXTS), rephrase
        )
        qa = ChatPromptTemplate.from_messages(
            [
                ("system", "Answer from the context:\n{context}"),
                MessagesPlaceholder("chat_history"),
                ("human", "{input}"),
            ]
        )
        chain = create_retrieval_chain(
            retriever, create_stuff_documents_chain(FakeListChatModel(responses=[answer]), qa)
        )
        chain.invoke(
            {"input": question, "chat_history": list(history)}, config={"metadata": {"session_id": session_id}}
        )
        history += [HumanMessage(question), AIMessage(answer)]


def langgraph_conversation(session_id: str, turns: list[tuple[str, str]]) -> None:
    """A MessagesState graph: the conversation is the graph's state, each turn one invoke with all messages;
    the session is LangGraph's thread (``configurable.thread_id``), which the instrumentor reports."""
    from langchain_core.messages import SystemMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    class State(MessagesState):
        context: list[Document]

    messages: list[BaseMessage] = []
    for question, answer in turns:
        llm = FakeListChatModel(responses=[answer])

        def retrieve(state: State) -> dict:
            return {"context": ListRetriever(texts=CONTEXTS).invoke(str(state["messages"][-1].content))}

        def generate(state: State, llm: FakeListChatModel = llm) -> dict:
            system = SystemMessage("Answer from the context:\n" + "\n".join(d.page_content for d in state["context"]))
            return {"messages": [llm.invoke([system, *state["messages"]])]}

        graph = StateGraph(State)
        graph.add_node("retrieve", retrieve)
        graph.add_node("generate", generate)
        graph.add_edge(START, "retrieve")
        graph.add_edge("retrieve", "generate")
        graph.add_edge("generate", END)
        out = graph.compile().invoke(
            {"messages": [*messages, HumanMessage(question)]}, config={"configurable": {"thread_id": session_id}}
        )
        messages = list(out["messages"])


def llama_index_conversation(session_id: str, turns: list[tuple[str, str]]) -> None:
    """The condense_plus_context chat engine keeps the conversation in its memory; the session is set with
    OpenInference's ``using_session``, as LlamaIndex apps do."""
    from llama_index.core import Document as LlamaDocument
    from llama_index.core import Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from openinference.instrumentation import using_session

    from tests.frameworks.test_llama_index import ScriptedLLM

    Settings.embed_model = MockEmbedding(embed_dim=8)
    index = VectorStoreIndex.from_documents([LlamaDocument(text=t) for t in CONTEXTS])
    llm = ScriptedLLM(rephrased="Acme plans", prompts=[], chat_model=True)
    engine = index.as_chat_engine(chat_mode="condense_plus_context", llm=llm, similarity_top_k=2)
    for question, answer in turns:
        llm.answer = answer
        with using_session(session_id):
            engine.chat(question)


CONVERSATIONS: dict[str, Callable[[str, list[tuple[str, str]]], None]] = {
    "langchain-history-aware": langchain_conversation,
    "langgraph-messages-state": langgraph_conversation,
    "llama-index-condense-plus-context": llama_index_conversation,
}


def judge_request_for(judge: JudgeServer, sample: RAGSample) -> str:
    """The user message of the judge call about ``sample`` (its answer is fenced in it)."""
    for body in reversed(judge.requests):
        user = body["messages"][-1]["content"]
        if "ANSWER>>>\n" + sample.answer + "\n" in user and "QUESTION>>>\n" + sample.question + "\n" in user:
            return user
    raise AssertionError(f"no judge request about {sample.question!r}")


def session_annotations(phoenix: PhoenixServer, project: str, session_id: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    rows: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.get(
            f"{phoenix.url}/v1/projects/{project}/session_annotations",
            params={"session_ids": session_id, "limit": 100},
        )
        if response.status_code == 200:
            rows = response.json()["data"]
            if {r["name"] for r in rows} >= set(SESSION_ANNOTATIONS):
                assert len({r["identifier"] for r in rows}) == 1, "the session was scored in two stretches"
                return {r["name"]: r for r in rows}
        time.sleep(0.2)
    raise AssertionError(f"session {session_id} has annotations {[r['name'] for r in rows]}")


@pytest.mark.parametrize("framework", list(CONVERSATIONS))
def test_follow_up_is_judged_with_its_history_and_the_session_is_scored(
    app: tuple[TracerProvider, Chat, str], judge: JudgeServer, phoenix: PhoenixServer, framework: str
) -> None:
    if framework.startswith("langchain"):
        pytest.importorskip("langchain_classic", reason="langchain-classic is not installed")
    if framework.startswith("langgraph"):
        pytest.importorskip("langgraph", reason="langgraph is not installed")
    provider, chat, project = app
    runtime = installed_runtime()
    assert runtime is not None and runtime.evaluator is not None
    runtime.evaluator.cache = MemoryCache()  # the same turns in another framework: judged again, not cached
    converse = CONVERSATIONS[framework]
    session_id = f"{framework}-{uuid.uuid4().hex[:8]}"

    converse(session_id, TURNS)
    assert provider.force_flush(30_000)
    turns = chat.of(session_id, 3)
    (_, result1), (sample2, result2), (sample3, result3) = turns
    assert [s.question for s, _ in turns] == [q for q, _ in TURNS]
    assert sample3.history[-2:] == [
        {"role": "user", "content": TURNS[1][0]},
        {"role": "assistant", "content": TURNS[1][1]},
    ]
    # The judge was shown the conversation, fenced as data before the question, and understood "it".
    prompt = judge_request_for(judge, sample3)
    assert prompt.index("CONVERSATION>>>") < prompt.index("QUESTION>>>")
    assert "user: Tell me about the Pro plan." in prompt
    assert (result3.tier, result3.relevance, result3.verdict) == ("local", 0.95, "pass"), result3
    assert (result2.tier, result2.faithfulness, result2.verdict) == ("local", 0.2, "fail"), result2  # "Zorblax"
    assert result1.verdict == "pass", result1

    # The same follow-up alone: no conversation in the prompt, and the judge cannot tell what "it" is.
    converse(f"{session_id}-alone", TURNS[2:])
    assert provider.force_flush(30_000)
    ((alone, alone_result),) = chat.of(f"{session_id}-alone", 1)
    assert alone.history == [] and "CONVERSATION>>>" not in judge_request_for(judge, alone)
    assert (alone_result.tier, alone_result.relevance, alone_result.verdict) == ("local", 0.2, "fail"), alone_result

    # Idle for IDLE_S: the session's scores are in Phoenix.
    found = session_annotations(phoenix, project, session_id)
    share = found["session_failed_share"]
    assert share["result"]["score"] == pytest.approx(1 / 3, abs=1e-4)
    assert share["result"]["label"] == "1/3 failed" and share["annotator_kind"] == "CODE"
    worst = found["session_worst_turn"]
    assert (worst["result"]["label"], worst["result"]["score"]) == ("fail", 0.2)
    assert worst["metadata"]["trace_id"] == f"{sample2.trace_id:032x}"
    assert worst["metadata"]["url"] == f"{phoenix.url}/redirects/traces/{sample2.trace_id:032x}"
    assert found["session_tiers"]["metadata"]["tiers"] == {"local": 3}
    resolved = found["session_resolved"]
    assert (resolved["result"]["label"], resolved["result"]["score"], resolved["annotator_kind"]) == (
        "resolved",
        0.9,
        "LLM",
    )
    # The session judge read the whole conversation, and what it cost is counted with the judges'.
    session_prompts = [
        b["messages"][-1]["content"]
        for b in judge.requests
        if b["messages"][0]["content"].startswith("You read one conversation")
    ]
    session_prompt = next(p for p in session_prompts if TURNS[0][0] in p and TURNS[2][1] in p)
    assert all(q in session_prompt for q, _ in TURNS)
    assert runtime.evaluator.cost_tracker.totals()["session"].prompt_tokens >= 400
    # The worst-turn link is Phoenix's own redirect route to the trace's page.
    assert httpx.get(worst["metadata"]["url"]).status_code == 200


def rendered(url: str) -> str:
    """The page as Phoenix's UI renders it in headless Chromium (its DOM after the scripts ran)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--window-size=1600,1000", "--virtual-time-budget=15000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    return done.stdout


def test_sessions_view_shows_the_scores(app: tuple[TracerProvider, Chat, str], phoenix: PhoenixServer) -> None:
    """Phoenix's own Sessions tab lists the session with ragtriage's annotations as columns."""
    provider, chat, project = app
    session_id = f"sessions-view-{uuid.uuid4().hex[:8]}"
    langchain_conversation(session_id, TURNS) if _has("langchain_classic") else llama_index_conversation(
        session_id, TURNS
    )
    assert provider.force_flush(30_000)
    chat.of(session_id, 3)
    session_annotations(phoenix, project, session_id)
    project_id = httpx.get(f"{phoenix.url}/v1/projects/{project}").json()["data"]["id"]
    dom = rendered(f"{phoenix.url}/projects/{project_id}/sessions")
    assert session_id in dom, dom[-2000:]
    for name in SESSION_ANNOTATIONS:
        assert name in dom, name


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
