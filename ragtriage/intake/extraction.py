"""Copy the few attributes an evaluation needs out of finished spans: the one place the extraction rules live.

Per span, :func:`extract` reads what the span carries (:class:`SpanFacts`); ``assembly`` ranks those facts
across a local root's spans and joins them into one sample. The rules, checked against the real OpenInference
instrumentors by ``tests/frameworks/`` (what each framework gives: ``docs/frameworks.md``):

**Which spans speak for the request.** The local root, and *top-level* spans: CHAIN/AGENT (or kind-less) spans
with no ancestor that has an OpenInference kind, e.g. the chain under an HTTP server span. A step inside a
chain (a text splitter, a prompt formatter, a sub-chain) never gives the question or the answer, and its
values are not even read. RETRIEVER, RERANKER, LLM, EMBEDDING, PROMPT and TOOL spans never give them from
``input.value``/``output.value``: a retriever's input is the (possibly rephrased) search query.

**Question**, best source first: 0. ``ragtriage.question`` on any span (the explicit fallback, for apps
without OpenInference); 1. the local root's ``input.value``; 2. a top-level span's ``input.value``; 3. the
last user message (``llm.input_messages``) of the LLM span that ended last. An ``input.value`` that is a JSON
object is searched for the current user turn: the keys ``question``, ``query``, ``input``, ``user_input``,
``query_str``, ``message``, ``prompt`` (a string, or a user message's content), else the last user message of
``messages``, else the same one or two levels down (Haystack's ``{"data": {component: {...}}}``, LlamaIndex's
``{"query_bundle": {"query_str": ...}}``). A JSON object with none of these gives no question, not its JSON.

**Answer**, best source first (on a tie the span that ended later wins): 0. ``ragtriage.answer``; 1. the local
root's ``output.value``; 2. a top-level span's ``output.value``; 3. the first output message of the LLM span
that ended last; 4. an LLM span's ``output.value`` (a Haystack PromptBuilder is an LLM span whose output is
the prompt, so a generator's output message beats it; LlamaIndex records a streamed completion here);
5. an ``output.value`` that is JSON with no answer in it (or too large to parse), as text. A JSON object
gives its ``answer`` / ``output`` / ``result`` / ``response`` / ``text`` / ``content`` / ``replies`` value (a
string, the first of a list, or a message's content); a LangChain (``dumpd``) or OpenAI message dict gives
its content; ``messages`` gives its last assistant message; one level down, an object holding one of those
keys is searched (Haystack's ``{"llm": {"replies": [...]}}``). So ``create_retrieval_chain``'s
``{"input", "context", "answer"}`` gives the answer, not the dump. A stream not consumed when the span ended
(``<generator object>``) is no answer.

**Contexts**: the documents of every RETRIEVER span under the root (``retrieval.documents.{i}.document.
{content,id,score}``; a missing id or score is read from the document's JSON ``metadata``; LangChain's
``Document.id``, which its instrumentor leaves out of the document attributes, from the retriever's
``output.value``), and ``ragtriage.contexts`` (a list of strings). A retriever nested in another retriever
only fills in ids and scores of the outer one's documents (the outer result is what the app got). Documents
from several retrievers are deduplicated by id, else by content (one text under two ids is kept once), in
the order their spans ended. A RERANKER span's output documents (``reranker.output_documents.*``) replace
its input documents, where the first of them was.

**History**: the conversation before the current turn travels with the sample (it is not judged): the
``chat_history`` / ``history`` / ``messages`` next to the question in its ``input.value``, else the user and
assistant messages before the last user message of the LLM span that ended last (system messages left out).
A completion LLM's single prompt string is not taken apart.

Bad data (missing attributes, non-string values, bytes, invalid, deep or huge JSON) yields no fact, never an
exception and never a made-up one. JSON is parsed only when the first character says it can be an object or
array, and only up to :data:`MAX_JSON_CHARS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openinference.semconv.trace import DocumentAttributes, MessageAttributes, RerankerAttributes, SpanAttributes

from ragtriage.sample import Document

KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
INPUT = SpanAttributes.INPUT_VALUE
INPUT_MIME = SpanAttributes.INPUT_MIME_TYPE
OUTPUT = SpanAttributes.OUTPUT_VALUE
OUTPUT_MIME = SpanAttributes.OUTPUT_MIME_TYPE
DOCS = SpanAttributes.RETRIEVAL_DOCUMENTS
RERANKER_INPUT = RerankerAttributes.RERANKER_INPUT_DOCUMENTS
RERANKER_OUTPUT = RerankerAttributes.RERANKER_OUTPUT_DOCUMENTS
FALLBACK_QUESTION = "ragtriage.question"
FALLBACK_ANSWER = "ragtriage.answer"
FALLBACK_CONTEXTS = "ragtriage.contexts"
#: Set on ragtriage's own EVALUATOR spans, so they are never evaluated themselves.
OWN_SPAN = "ragtriage.evaluation"
SESSION_ID = SpanAttributes.SESSION_ID
#: A session id longer than this is cut (it is a key in memory, Redis and Phoenix).
MAX_SESSION_ID_CHARS = 256

MAX_DOCUMENTS = 64
MAX_MESSAGES = 256
#: Longer JSON-looking values are not parsed: they give no question, and an answer only for want of anything better.
MAX_JSON_CHARS = 1_000_000
#: A document's JSON metadata is read for a missing id or score only up to this size.
MAX_METADATA_CHARS = 4096
#: LangChain's document ids are read from a retriever's ``output.value`` only up to this size.
MAX_RETRIEVER_OUTPUT_CHARS = 262_144

QUESTION_KEYS = ("question", "query", "input", "user_input", "query_str", "message", "prompt")
ANSWER_KEYS = ("answer", "output", "result", "response", "text", "content", "replies")
HISTORY_KEYS = ("chat_history", "history")
_ID_KEYS = ("id", "doc_id", "document_id")
_SCORE_KEYS = ("score", "relevance_score", "similarity_score")
#: Span kinds whose input/output values are the request and the response (kind-less spans count too).
_IO_KINDS = frozenset({None, "CHAIN", "AGENT", "UNKNOWN"})
_ROLES = {
    "user": "user", "human": "user", "humanmessage": "user", "humanmessagechunk": "user",
    "assistant": "assistant", "ai": "assistant", "aimessage": "assistant", "aimessagechunk": "assistant",
    "model": "assistant", "system": "system", "systemmessage": "system", "developer": "system",
    "tool": "tool", "toolmessage": "tool", "function": "tool",
}  # fmt: skip


def _document_keys(prefix: str) -> tuple[tuple[str, str, str, str], ...]:
    names = (DocumentAttributes.DOCUMENT_CONTENT, DocumentAttributes.DOCUMENT_SCORE, DocumentAttributes.DOCUMENT_ID,
             DocumentAttributes.DOCUMENT_METADATA)  # fmt: skip
    return tuple(tuple(f"{prefix}.{i}.{name}" for name in names) for i in range(MAX_DOCUMENTS))  # type: ignore[misc]


#: ``{prefix}.{i}.document.{content,score,id,metadata}``, formatted once instead of per span
_DOCUMENT_KEYS = _document_keys(DOCS)
_RERANKER_INPUT_KEYS = _document_keys(RERANKER_INPUT)
_RERANKER_OUTPUT_KEYS = _document_keys(RERANKER_OUTPUT)
_IN_ROLE = tuple(
    f"{SpanAttributes.LLM_INPUT_MESSAGES}.{i}.{MessageAttributes.MESSAGE_ROLE}" for i in range(MAX_MESSAGES)
)
_IN_CONTENT = tuple(
    f"{SpanAttributes.LLM_INPUT_MESSAGES}.{i}.{MessageAttributes.MESSAGE_CONTENT}" for i in range(MAX_MESSAGES)
)
_OUT_CONTENT = f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_CONTENT}"

Turn = dict[str, str]
"""One turn of a conversation: ``{"role": "user" | "assistant" | "system" | "tool", "content": ...}``."""


@dataclass(slots=True)
class SpanFacts:
    """What one span contributes to its trace's sample, and where in the span each fact was found."""

    kind: str | None = None
    explicit: bool = False  #: carries ``ragtriage.*`` attributes
    question: str | None = None
    question_source: str | None = None
    answer: str | None = None
    answer_source: str | None = None
    answer_weak: bool = False  #: JSON with no answer in it, kept as text only for want of anything better
    history: list[Turn] | None = None
    llm_question: str | None = None
    llm_answer: str | None = None
    llm_answer_weak: bool = False  #: from ``output.value``, not an output message
    llm_history: list[Turn] | None = None
    documents: list[Document] = field(default_factory=list)
    reranker_input: list[Document] = field(default_factory=list)
    reranker_output: list[Document] = field(default_factory=list)
    session_id: str | None = None  #: OpenInference ``session.id``: the conversation the trace is a turn of


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None


_NOT_JSON = object()
_TOO_BIG = object()  # looks like JSON but is past MAX_JSON_CHARS: not parsed, and not taken as text either


def _load(value: str, mime: Any) -> Any:
    """The parsed JSON object or array, ``_NOT_JSON``, or ``_TOO_BIG`` (parsed only if the first character allows)."""
    if value[:1] not in ("{", "[") or mime == "text/plain":
        return _NOT_JSON
    if len(value) > MAX_JSON_CHARS:
        return _TOO_BIG
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return _NOT_JSON
    return data if isinstance(data, dict | list) else _NOT_JSON


def _content(value: Any) -> str | None:
    """A message content: a string, or the text parts of a list of parts (OpenAI/LangChain multimodal)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p if isinstance(p, str) else p.get("text") for p in value if isinstance(p, str | dict)]
        texts = [p for p in parts if isinstance(p, str)]
        return "".join(texts) if texts else None
    return None


def turn(message: Any) -> Turn | None:
    """A message in any of the shapes frameworks serialise it to, as a :data:`Turn`; ``None`` if it is none.

    OpenAI ``{"role", "content"}``; LangChain ``dumpd`` ``{"lc": 1, "id": [..., "AIMessage"], "kwargs": {...}}``,
    ``{"type": "ai", "data": {"content": ...}}`` and ``{"type": "human", "content": ...}``; a
    ``[role, content]`` pair."""
    if isinstance(message, dict):
        if "role" in message:
            role, body = message.get("role"), message
        elif message.get("lc") == 1 and isinstance(message.get("kwargs"), dict):
            ids = message.get("id")
            role, body = (ids[-1] if isinstance(ids, list) and ids else None), message["kwargs"]
        elif isinstance(message.get("data"), dict) and "type" in message:
            role, body = message.get("type"), message["data"]
        elif "type" in message and "content" in message:
            role, body = message.get("type"), message
        else:
            return None
        content = _content(body.get("content"))
    elif isinstance(message, list | tuple) and len(message) == 2 and isinstance(message[0], str):
        role, content = message[0], _content(message[1])
    else:
        return None
    normal = _ROLES.get(role.lower()) if isinstance(role, str) else None
    if normal is None or content is None:
        return None
    return {"role": normal, "content": content}


def _turns(messages: Any) -> list[Turn] | None:
    if not isinstance(messages, list):
        return None
    turns = [t for m in messages[:MAX_MESSAGES] if (t := turn(m)) is not None]
    return turns if turns or not messages else None


def _split_last_user(turns: list[Turn]) -> tuple[str | None, list[Turn]]:
    """The last user turn's content and the conversation before it (system turns left out)."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i]["role"] == "user":
            return turns[i]["content"], [t for t in turns[:i] if t["role"] != "system"]
    return None, [t for t in turns if t["role"] != "system"]


def question_in(data: Any, depth: int = 0) -> tuple[str | None, list[Turn] | None, str]:
    """The current user turn in a parsed ``input.value``, the history next to it, and the key path it came from."""
    if isinstance(data, list):
        turns = _turns(data)
        if turns:
            question, earlier = _split_last_user(turns)
            return question, earlier, "[messages]"
        return None, None, ""
    if not isinstance(data, dict):
        return None, None, ""
    history: list[Turn] | None = None
    for key in HISTORY_KEYS:
        if (history := _turns(data.get(key))) is not None:
            history = [t for t in history if t["role"] != "system"]
            break
    for key in QUESTION_KEYS:
        value = data.get(key)
        if isinstance(value, str):
            return value, history, key
        message = turn(value)
        if message is not None and message["role"] == "user":
            return message["content"], history, key
    turns = _turns(data.get("messages"))
    if turns:
        question, before = _split_last_user(turns)
        if question is not None:
            return question, history if history is not None else before, "messages"
    if depth < 2:
        for key, value in data.items():
            if isinstance(value, dict):
                question, nested_history, path = question_in(value, depth + 1)
                if question is not None:
                    return question, history if history is not None else nested_history, f"{key}.{path}"
    return None, history, ""


def answer_in(data: Any, depth: int = 0) -> tuple[str | None, str]:
    """The answer in a parsed ``output.value`` and the key path it came from; ``None`` if there is none."""
    if isinstance(data, str):
        return (None, "") if _is_stream_placeholder(data) else (data, "")
    if isinstance(data, list):
        # A list only when it cannot be ambiguous: one element at the top, or a value under an answer key.
        if data and (depth > 0 or len(data) == 1):
            answer, path = answer_in(data[0], depth + 1)
            return answer, f"[0]{'.' + path if path else ''}"
        return None, ""
    if not isinstance(data, dict) or depth > 3:
        return None, ""
    message = turn(data)
    if message is not None:
        return (message["content"], "content") if message["role"] == "assistant" else (None, "")
    for key in ANSWER_KEYS:
        if key in data:
            answer, path = answer_in(data[key], depth + 1)
            if answer is not None:
                return answer, f"{key}{'.' + path if path else ''}"
    turns = _turns(data.get("messages"))
    if turns:
        for t in reversed(turns):
            if t["role"] == "assistant":
                return t["content"], "messages"
    if depth == 0:  # one level down, only where an answer key is (a component's outputs, not document metadata)
        for key, value in data.items():
            if isinstance(value, dict) and any(k in value for k in ANSWER_KEYS):
                answer, path = answer_in(value, depth + 1)
                if answer is not None:
                    return answer, f"{key}.{path}"
    return None, ""


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _identifier(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _documents(
    attributes: Mapping[str, Any], keys: tuple[tuple[str, str, str, str], ...], span_id: int
) -> list[Document]:
    documents: list[Document] = []
    for i, (content_key, score_key, id_key, metadata_key) in enumerate(keys):
        content = _text(attributes.get(content_key))
        if content is None:
            break
        doc_id = _identifier(attributes.get(id_key))
        score = _number(attributes.get(score_key))
        if doc_id is None or score is None:
            metadata = attributes.get(metadata_key)
            small = isinstance(metadata, str) and metadata[:1] == "{" and len(metadata) <= MAX_METADATA_CHARS
            if small and isinstance(data := _load(metadata, None), dict):  # type: ignore[arg-type]
                doc_id = doc_id or next((v for k in _ID_KEYS if (v := _identifier(data.get(k)))), None)
                if score is None:
                    score = next((n for k in _SCORE_KEYS if (n := _number(data.get(k))) is not None), None)
        documents.append(Document(content, id=doc_id, score=score, span_id=span_id, position=i))
    return documents


def _langchain_ids(attributes: Mapping[str, Any], documents: list[Document]) -> None:
    """LangChain's ``Document.id`` is in the retriever's ``output.value`` only: copy it where the content matches."""
    raw = attributes.get(OUTPUT)
    if not isinstance(raw, str) or not raw.startswith('{"documents": [') or len(raw) > MAX_RETRIEVER_OUTPUT_CHARS:
        return
    data = _load(raw, None)
    listed = data.get("documents") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return
    for document, item in zip(documents, listed, strict=False):
        if isinstance(item, dict) and item.get("page_content") == document.content and document.id is None:
            document.id = _identifier(item.get("id"))


def extract(attributes: Mapping[str, Any], span_id: int, *, io: bool = True) -> SpanFacts | None:
    """``None`` when the span carries nothing an evaluation uses (most spans).

    With ``io=False`` (a step inside a chain, whose input and output are never the question and answer) the
    span's ``input.value``/``output.value`` are not read, so they are not parsed either."""
    raw_kind = attributes.get(KIND)
    kind = raw_kind if isinstance(raw_kind, str) else None
    facts = SpanFacts(kind=kind)
    found = False

    if FALLBACK_QUESTION in attributes or FALLBACK_ANSWER in attributes or FALLBACK_CONTEXTS in attributes:
        facts.explicit = True
        facts.question, facts.answer = _text(attributes.get(FALLBACK_QUESTION)), _text(attributes.get(FALLBACK_ANSWER))
        facts.question_source = FALLBACK_QUESTION if facts.question is not None else None
        facts.answer_source = FALLBACK_ANSWER if facts.answer is not None else None
        contexts = attributes.get(FALLBACK_CONTEXTS)
        if isinstance(contexts, list | tuple):
            facts.documents = [
                Document(t, span_id=span_id, position=i, in_phoenix=False)
                for i, c in enumerate(contexts[:MAX_DOCUMENTS])
                if (t := _text(c)) is not None
            ]
        found = True

    if kind == "RETRIEVER" and not facts.documents:
        facts.documents = _documents(attributes, _DOCUMENT_KEYS, span_id)
        if facts.documents and all(d.id is None for d in facts.documents):
            _langchain_ids(attributes, facts.documents)
        found = found or bool(facts.documents)
    elif kind == "RERANKER":
        facts.reranker_input = _documents(attributes, _RERANKER_INPUT_KEYS, span_id)
        facts.reranker_output = _documents(attributes, _RERANKER_OUTPUT_KEYS, span_id)
        found = found or bool(facts.reranker_input or facts.reranker_output)
    elif kind == "LLM":
        turns = _input_messages(attributes)
        if turns:
            facts.llm_question, facts.llm_history = _split_last_user(turns)
        facts.llm_answer = _text(attributes.get(_OUT_CONTENT))
        if facts.llm_answer is None and (raw := _text(attributes.get(OUTPUT))) is not None:
            facts.llm_answer, _, _ = _answer_from_output(raw, attributes.get(OUTPUT_MIME))
            facts.llm_answer_weak = True
        found = found or facts.llm_question is not None or facts.llm_answer is not None

    if found:
        facts.session_id = _session_id(attributes)
    if kind not in _IO_KINDS or not (io or facts.explicit):
        return facts if found else None
    if facts.question is None and (raw := _text(attributes.get(INPUT))) is not None:
        data = _load(raw, attributes.get(INPUT_MIME))
        if data is _NOT_JSON:
            facts.question, facts.question_source = raw, INPUT
        elif data is not _TOO_BIG:
            facts.question, facts.history, path = question_in(data)
            facts.question_source = f"{INPUT}[{path}]" if facts.question is not None else None
        found = found or facts.question is not None
    if facts.answer is None and (raw := _text(attributes.get(OUTPUT))) is not None:
        facts.answer, path, facts.answer_weak = _answer_from_output(raw, attributes.get(OUTPUT_MIME))
        if facts.answer is not None:
            facts.answer_source = f"{OUTPUT}[{path}]" if path else OUTPUT
            found = True
    if found and facts.session_id is None:
        facts.session_id = _session_id(attributes)
    return facts if found else None


def _session_id(attributes: Mapping[str, Any]) -> str | None:
    value = _text(attributes.get(SESSION_ID))
    return value[:MAX_SESSION_ID_CHARS] if value else None


def _is_stream_placeholder(text: str) -> bool:
    """What instrumentors record for a streamed response not yet consumed (``<generator object>``): no answer."""
    return text[:1] == "<" and (text.startswith(("<generator object", "<async_generator object")))


def _answer_from_output(raw: str, mime: Any) -> tuple[str | None, str, bool]:
    """(answer, key path, weak): the answer in a structured value, else the value itself (weak if it was JSON)."""
    if _is_stream_placeholder(raw):
        return None, "", False
    data = _load(raw, mime)
    if data is _NOT_JSON:
        return raw, "", False
    if data is _TOO_BIG:
        return raw, "", True
    answer, path = answer_in(data)
    if answer is None:
        return raw, "", True
    return answer, path, False


def _input_messages(attributes: Mapping[str, Any]) -> list[Turn]:
    turns: list[Turn] = []
    for role_key, content_key in zip(_IN_ROLE, _IN_CONTENT, strict=True):
        role = attributes.get(role_key)
        if role is None:
            break
        content = _text(attributes.get(content_key))
        normal = _ROLES.get(role.lower()) if isinstance(role, str) else None
        if normal is not None and content is not None:
            turns.append({"role": normal, "content": content})
    return turns
