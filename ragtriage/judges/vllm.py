"""Operating the local judge: the ``vllm serve`` command it expects, and a check of a running server.

Nothing here imports vllm: the command is printed (or exec'd) as text, and the check speaks HTTP.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from ragtriage.errors import TransportError
from ragtriage.judges._transport import ConnectionPool, Origin, error_message, timeout
from ragtriage.judges.base import JudgeError
from ragtriage.judges.llm import LLMJudge, StructuredOutput
from ragtriage.judges.schema import ask_for_schema

#: Context a judge call needs by default: ~900 prompt tokens for 2 KB of contexts, a few thousand for long
#: ones, plus the reply (``max_tokens`` 1024).
MIN_CONTEXT_TOKENS = 8192
_PROBE_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
_CONTEXT_ERROR = re.compile(r"maximum context length|context length|max_model_len|too long", re.IGNORECASE)


def serve_command(
    model: str, *, served_model_name: str | None = None, port: int = 8000, max_model_len: int = MIN_CONTEXT_TOKENS
) -> list[str]:
    """The ``vllm serve`` argv of a local judge: the model under the name the judge asks for, a context long
    enough for a judge call, automatic prefix caching (the judge's instructions are the same on every call)."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    if isinstance(max_model_len, bool) or not isinstance(max_model_len, int) or max_model_len < 1024:
        raise ValueError(f"max_model_len must be an int >= 1024, got {max_model_len!r}")
    return [
        "vllm",
        "serve",
        model,
        "--served-model-name",
        served_model_name or model,
        "--max-model-len",
        str(max_model_len),
        "--enable-prefix-caching",
        "--port",
        str(port),
    ]


@dataclass(frozen=True)
class Finding:
    step: str
    ok: bool
    message: str


async def check_server(
    url: str,
    model: str,
    *,
    structured_output: StructuredOutput = "json_schema",
    min_context_tokens: int = MIN_CONTEXT_TOKENS,
    api_key: str | None = None,
    timeout_s: float = 60.0,
) -> list[Finding]:
    """``/v1/models`` (is ``model`` served, with what context), one call that must keep to a JSON schema, then
    one real judge call. Stops at the first failure: what follows would fail for the same reason."""
    judge = LLMJudge(
        model=model, base_url=url, api_key=api_key, structured_output=structured_output, timeout_s=timeout_s
    )
    origin = Origin.parse(url)
    pool = ConnectionPool(origin)
    auth = origin.basic_auth or ((f"Authorization: Bearer {api_key}".encode(),) if api_key else ())
    findings: list[Finding] = []
    try:
        models = await _get(pool, "/models", auth, timeout_s)
        served = {m.get("id"): m for m in models.get("data", []) if isinstance(m, dict)}
        if model not in served:
            names = ", ".join(repr(n) for n in served) or "none"
            findings.append(
                Finding(
                    "models",
                    False,
                    f"model {model!r} is not served here; the server serves {names}. Set RAGTRIAGE_LOCAL_JUDGE_MODEL "
                    f"to one of them, or start vllm with --served-model-name {model}",
                )
            )
            return findings
        length = served[model].get("max_model_len")
        if isinstance(length, int) and length < min_context_tokens:
            findings.append(
                Finding(
                    "models",
                    False,
                    f"context too short: max_model_len is {length} tokens, a judge call may need {min_context_tokens} "
                    f"(prompt + max_tokens={judge.max_tokens}); restart vllm with --max-model-len {min_context_tokens}",
                )
            )
            return findings
        shown = f"max_model_len {length}" if isinstance(length, int) else "no max_model_len reported"
        findings.append(Finding("models", True, f"serves {model!r} ({shown})"))

        findings.append(await _probe(pool, judge, auth, timeout_s))
        if not findings[-1].ok:
            return findings

        try:
            verdict = await judge.judge(
                "What is the capital of France?", "Paris is the capital of France.", ["Paris is the capital of France."]
            )
        except JudgeError as exc:
            if _CONTEXT_ERROR.search(exc.reason):
                message = (
                    f"context too short for a judge call: {exc.reason}; restart vllm with a larger --max-model-len"
                )
            else:
                message = f"a judge call failed: {exc.reason}"
            findings.append(Finding("judge", False, message))
            return findings
        findings.append(
            Finding(
                "judge",
                True,
                f"a judge call gave a valid verdict (faithfulness {verdict.faithfulness:.2f}, "
                f"{verdict.usage.prompt_tokens} prompt tokens, {verdict.usage.latency_ms:.0f} ms)",
            )
        )
        return findings
    except (TransportError, asyncio.TimeoutError, _Failed) as exc:
        findings.append(Finding("models" if not findings else "structured output", False, _reason(exc, url)))
        return findings
    finally:
        pool.close()
        await judge.aclose()


class _Failed(Exception):
    pass


async def _get(pool: ConnectionPool, path: str, auth: tuple[bytes, ...], timeout_s: float) -> dict[str, Any]:
    async with timeout(timeout_s):
        response = await pool.request(b"GET", path, b"", auth)
    if response.status != 200:
        raise _Failed(f"GET {path} answered HTTP {response.status}{_message(response.body)}")
    try:
        return json.loads(response.body)
    except ValueError:
        raise _Failed(f"GET {path} did not answer JSON") from None


async def _probe(pool: ConnectionPool, judge: LLMJudge, auth: tuple[bytes, ...], timeout_s: float) -> Finding:
    """Ask for prose under a schema that allows only ``{"ok": <bool>}``: only a server that enforces the schema
    answers with that object."""
    step: Literal["structured output"] = "structured output"
    body: dict[str, Any] = {
        "model": judge.model,
        "messages": [{"role": "user", "content": "Write one short sentence about the sea, in plain prose."}],
        "max_tokens": 40,
        "temperature": 0.0,
    }
    if not ask_for_schema(body, judge.structured_output, "ragtriage_probe", _PROBE_SCHEMA):
        return Finding(step, True, "structured_output='none': the schema is asked for in the prompt only")
    async with timeout(timeout_s):
        response = await pool.request(b"POST", "/chat/completions", json.dumps(body).encode(), auth)
    if response.status != 200:
        return Finding(
            step,
            False,
            f"the server refused a {judge.structured_output} request: HTTP {response.status}"
            f"{_message(response.body)}. {_advice(judge.structured_output)}",
        )
    content: object = response.body[:120]
    try:
        content = json.loads(response.body)["choices"][0]["message"]["content"]
        reply = json.loads(str(content))
        enforced = isinstance(reply, dict) and set(reply) == {"ok"} and isinstance(reply["ok"], bool)
    except (ValueError, KeyError, IndexError, TypeError):
        enforced = False
    if not enforced:
        return Finding(
            step,
            False,
            f'no structured outputs: asked for {{"ok": <bool>}} by {judge.structured_output}, the server wrote '
            f"{str(content)[:120]!r}. {_advice(judge.structured_output)}",
        )
    return Finding(step, True, f"the server keeps to a JSON schema ({judge.structured_output})")


def _advice(mode: str) -> str:
    other = "vllm" if mode == "json_schema" else "json_schema"
    return (
        f"Upgrade vLLM (structured outputs need a guided-decoding backend), or try structured_output={other!r}; "
        "the judge still validates every reply, but unconstrained models fail it more often"
    )


def _message(body: bytes) -> str:
    message = error_message(body)
    return f": {message}" if message else ""


def _reason(exc: BaseException, url: str) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer from {url} in time"
    if isinstance(exc, TransportError):
        return f"cannot reach {url}: {exc}"
    return str(exc)
