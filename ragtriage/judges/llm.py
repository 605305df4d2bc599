"""An LLM judge on the OpenAI chat API: one class for vLLM (local tier) and OpenAI (heavy tier)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
import weakref
from collections.abc import Sequence
from typing import Any, Literal

import openai

from ragtriage._log_hygiene import own_http, redact
from ragtriage.judges.base import JudgeError, JudgeUsage, JudgeVerdict
from ragtriage.judges.parsing import JudgeOutputError, parse_judge_output
from ragtriage.judges.prompts import PROMPT_VERSION, build_messages
from ragtriage.judges.schema import output_json_schema

logger = logging.getLogger(__name__)

StructuredOutput = Literal["json_schema", "vllm", "none"]
_STRUCTURED_OUTPUTS = ("json_schema", "vllm", "none")
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 8.0


class LLMJudge:
    """Judges a RAG sample with one chat completion whose JSON output is schema-checked.

    ``structured_output`` says how the server is asked to keep to the schema:
    ``"json_schema"`` (OpenAI ``response_format``; vLLM accepts it too),
    ``"vllm"`` (vLLM's ``structured_outputs`` extra parameter), or ``"none"``
    (prompt only). Replies are validated here in every mode.

    Retries cover 429, 5xx, timeouts and connection errors, honour
    ``Retry-After`` and back off with jitter; concurrency is capped by a
    semaphore per event loop.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        input_usd_per_1m: float = 0.0,
        output_usd_per_1m: float = 0.0,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        max_concurrency: int = 64,
        structured_output: StructuredOutput = "json_schema",
        temperature: float = 0.0,
        max_tokens: int = 1024,
        max_retry_wait_s: float = 30.0,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if base_url is not None and (not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError("api_key must be a string")
        for name, value in (
            ("input_usd_per_1m", input_usd_per_1m),
            ("output_usd_per_1m", output_usd_per_1m),
            ("temperature", temperature),
            ("max_retry_wait_s", max_retry_wait_s),
        ):
            _require_number(name, value, minimum=0.0)
        _require_number("timeout_s", timeout_s, minimum=0.0, exclusive=True)
        for name, value, low in (
            ("max_retries", max_retries, 0),
            ("max_concurrency", max_concurrency, 1),
            ("max_tokens", max_tokens, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if structured_output not in _STRUCTURED_OUTPUTS:
            raise ValueError(f"structured_output must be one of {_STRUCTURED_OUTPUTS}, got {structured_output!r}")
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        self.input_usd_per_1m = float(input_usd_per_1m)
        self.output_usd_per_1m = float(output_usd_per_1m)
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.structured_output: StructuredOutput = structured_output
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.max_retry_wait_s = float(max_retry_wait_s)
        self.retries = 0
        """Retried calls so far (a metric, not a limit)."""
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[openai.AsyncOpenAI, asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()

    @property
    def fingerprint(self) -> str:
        return f"llm:{self.model}@{self.base_url or 'openai'}:{self.structured_output}:p{PROMPT_VERSION}"

    def _client(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        pair = self._per_loop.get(loop)
        if pair is None:
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                # vLLM accepts any key unless started with --api-key; the SDK insists on one.
                api_key=self._api_key or ("EMPTY" if self.base_url else None),
                max_retries=0,
                timeout=self.timeout_s,
            )
            pair = (client, asyncio.Semaphore(self.max_concurrency))
            self._per_loop[loop] = pair
        return pair

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (each loop has its own)."""
        pair = self._per_loop.pop(asyncio.get_running_loop(), None)
        if pair is not None:
            await pair[0].close()

    def _request(self, messages: list[dict[str, str]], *, verify_claims: bool, temperature: float) -> dict[str, Any]:
        schema = output_json_schema(verify_claims=verify_claims)
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": self.max_tokens,
        }
        if self.structured_output == "json_schema":
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "rag_judgement", "schema": schema, "strict": True},
            }
        elif self.structured_output == "vllm":
            request["extra_body"] = {"structured_outputs": {"json": schema}}
        return request

    async def judge(
        self,
        question: str,
        answer: str,
        contexts: Sequence[str],
        *,
        verify_claims: bool = False,
        temperature: float | None = None,
    ) -> JudgeVerdict:
        keys = list(output_json_schema(verify_claims=verify_claims)["properties"])
        messages = build_messages(question, answer, contexts, verify_claims=verify_claims, keys=keys)
        request = self._request(
            messages, verify_claims=verify_claims, temperature=self.temperature if temperature is None else temperature
        )
        client, semaphore = self._client()
        started = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            try:
                # Marked before wait_for: its task copies the context, so the SDK's and httpx2's records see it.
                with own_http(self._api_key):
                    async with semaphore:
                        response = await asyncio.wait_for(client.chat.completions.create(**request), self.timeout_s)
                break
            except (
                asyncio.TimeoutError,
                openai.APITimeoutError,
                openai.APIConnectionError,
                openai.APIStatusError,
            ) as exc:
                reason = _describe(exc)
                if not _retryable(exc) or attempts > self.max_retries:
                    spent = "" if attempts == 1 else f" after {attempts} attempts"
                    raise JudgeError(f"{self.model}: {reason}{spent}", usage=self._usage(started, attempts)) from None
                self.retries += 1
                await asyncio.sleep(self._delay(exc, attempts))

        usage = self._usage(started, attempts, response.usage)
        choice = response.choices[0] if response.choices else None
        raw = (choice.message.content if choice is not None else None) or ""
        if choice is not None and choice.finish_reason == "length":
            raise JudgeError(f"{self.model}: reply cut off at max_tokens={self.max_tokens}", usage=usage, raw=raw)
        try:
            output = parse_judge_output(raw, n_contexts=len(contexts), verify_claims=verify_claims)
        except JudgeOutputError as exc:
            raise JudgeError(f"{self.model}: {exc}", usage=usage, raw=raw) from None
        return JudgeVerdict(output=output, usage=usage, raw=raw)

    def _usage(self, started: float, attempts: int, usage: Any = None) -> JudgeUsage:
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = (prompt * self.input_usd_per_1m + completion * self.output_usd_per_1m) / 1_000_000
        return JudgeUsage(prompt, completion, cost, (time.perf_counter() - started) * 1000, attempts)

    def _delay(self, exc: BaseException, attempt: int) -> float:
        hinted = _retry_after_s(exc)
        if hinted is not None:
            return min(hinted, self.max_retry_wait_s)
        backoff = min(0.25 * 2 ** (attempt - 1), _MAX_BACKOFF_S)
        return min(backoff * random.uniform(0.5, 1.5), self.max_retry_wait_s)

    def __repr__(self) -> str:
        # Never the API key.
        return (
            f"LLMJudge(model={self.model!r}, base_url={redact(self.base_url) if self.base_url else None!r}, "
            f"structured_output={self.structured_output!r}, timeout_s={self.timeout_s}, max_retries={self.max_retries})"
        )


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, asyncio.TimeoutError | openai.APITimeoutError):
        return "timed out"
    return f"connection failed ({type(exc).__name__})"


def _retry_after_s(exc: BaseException) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _require_number(name: str, value: object, *, minimum: float, exclusive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        raise ValueError(f"{name} must be {'>' if exclusive else '>='} {minimum}, got {value!r}")
