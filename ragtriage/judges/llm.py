"""An LLM judge on the OpenAI chat API: one class for vLLM (local tier) and OpenAI (heavy tier)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import time
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from ragtriage._log_hygiene import redact
from ragtriage.errors import JudgeOutputError, TransportError
from ragtriage.judges._transport import ConnectionPool, Response, error_message, timeout
from ragtriage.judges.base import JudgeError, JudgeUsage, JudgeVerdict
from ragtriage.judges.fleet import Fleet, Server
from ragtriage.judges.parsing import parse_judge_output
from ragtriage.judges.pricing import published_prices
from ragtriage.judges.prompts import PROMPT_VERSION, build_messages
from ragtriage.judges.schema import ask_for_schema, output_json_schema

logger = logging.getLogger(__name__)

StructuredOutput = Literal["json_schema", "vllm", "none"]
_STRUCTURED_OUTPUTS = ("json_schema", "vllm", "none")
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 8.0
OPENAI_URL = "https://api.openai.com/v1"
_T = TypeVar("_T")
_KEYS = {claims: tuple(output_json_schema(verify_claims=claims)["properties"]) for claims in (False, True)}


class _HTTPError(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class LLMJudge:
    """Judges a RAG sample with one chat completion whose JSON output is schema-checked.

    Speaks the OpenAI chat completions API (``POST {base_url}/chat/completions``) to vLLM or OpenAI
    over a lean keep-alive HTTP/1.1 client (:mod:`ragtriage.judges._transport`: the ``openai`` SDK
    costs 3 to 7 ms of CPU a call, this about 0.5 ms). ``base_url`` None is OpenAI, with ``api_key``
    or ``OPENAI_API_KEY``; a list of URLs is a fleet of servers running the same model
    (:mod:`ragtriage.judges.fleet`: each sample prefers one server, by a hash of its content, and
    fails over to the next; servers that cannot be reached are taken out for a back-off).

    ``structured_output`` says how the server is asked to keep to the schema:
    ``"json_schema"`` (OpenAI ``response_format``; vLLM accepts it too),
    ``"vllm"`` (vLLM's ``structured_outputs`` request field), or ``"none"``
    (prompt only). Replies are validated here in every mode.

    Prices left unset are the model's published ones (:mod:`ragtriage.judges.pricing`: gpt-4o-mini's), else 0
    (a self-hosted model); prices given win.

    Retries cover 429, 5xx, timeouts and connection errors, honour
    ``Retry-After`` and back off with jitter; concurrency is capped by a
    semaphore per event loop (``max_concurrency`` calls in flight over all servers).
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        input_usd_per_1m: float | None = None,
        output_usd_per_1m: float | None = None,
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
        urls = (base_url,) if isinstance(base_url, str) else tuple(base_url) if base_url is not None else ()
        if (
            isinstance(base_url, bytes)
            or (base_url is not None and not urls)
            or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls)
        ):
            raise ValueError(f"base_url must be an http(s) URL or a list of them, got {base_url!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError("api_key must be a string")
        published = published_prices(model) if isinstance(model, str) else (0.0, 0.0)
        if base_url is None and published == (0.0, 0.0) and (input_usd_per_1m is None or output_usd_per_1m is None):
            logger.warning("ragtriage: no published price known for %r: set its prices, or its cost reads $0", model)
        input_usd_per_1m = published[0] if input_usd_per_1m is None else input_usd_per_1m
        output_usd_per_1m = published[1] if output_usd_per_1m is None else output_usd_per_1m
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
        self.base_url = base_url if isinstance(base_url, str) or base_url is None else urls
        self.fleet = Fleet(urls or (OPENAI_URL,))
        _warn_about_proxies(self.fleet.servers)
        # The SDK's rule, kept: OpenAI itself needs a key, from the argument or OPENAI_API_KEY.
        self._api_key = api_key if api_key is not None or base_url else os.environ.get("OPENAI_API_KEY")
        self._auth = (f"Authorization: Bearer {self._api_key}".encode(),) if self._api_key else ()
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
        self._static: dict[tuple[bool, float], bytes] = {}
        self._systems: dict[str, bytes] = {}
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[dict[Server, ConnectionPool], asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()

    @property
    def fingerprint(self) -> str:
        where = self.base_url if isinstance(self.base_url, str) else ",".join(self.base_url or ("openai",))
        return f"llm:{self.model}@{where}:{self.structured_output}:p{PROMPT_VERSION}"

    @property
    def servers(self) -> list[Server]:
        """The servers, with their call and error counts and health (read by the metrics)."""
        return self.fleet.servers

    def _client(self) -> tuple[dict[Server, ConnectionPool], asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        pair = self._per_loop.get(loop)
        if pair is None:
            pools = {s: ConnectionPool(s.origin, max_idle=self.max_concurrency) for s in self.fleet.servers}
            pair = (pools, asyncio.Semaphore(self.max_concurrency))
            self._per_loop[loop] = pair
        return pair

    async def aclose(self) -> None:
        """Close the connections of the running loop (each loop has its own)."""
        pair = self._per_loop.pop(asyncio.get_running_loop(), None)
        for pool in pair[0].values() if pair is not None else ():
            pool.close()

    def request_body(
        self, messages: list[dict[str, str]], *, verify_claims: bool, temperature: float
    ) -> dict[str, Any]:
        """The chat completions request this judge sends (also a Batch API line's ``body``)."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": self.max_tokens,
        }
        ask_for_schema(
            request, self.structured_output, "rag_judgement", output_json_schema(verify_claims=verify_claims)
        )
        return request

    def _body(self, messages: list[dict[str, str]], *, verify_claims: bool, temperature: float) -> bytes:
        """``json.dumps(request_body(...))``, with all but the messages serialized once per shape (re-encoding the
        same schema on every call was a tenth of the call's CPU)."""
        key = (verify_claims, temperature)
        static = self._static.get(key)
        if static is None:
            rest = self.request_body([], verify_claims=verify_claims, temperature=temperature)
            del rest["messages"]
            static = self._static[key] = json.dumps(rest)[1:].encode()
        encoded = []
        for message in messages:
            if message["role"] == "system":  # the same on every call (see prompts.py): encoded once
                cached = self._systems.get(message["content"])
                if cached is None:
                    cached = self._systems[message["content"]] = json.dumps(message).encode()
                encoded.append(cached)
            else:
                encoded.append(json.dumps(message).encode())
        return b'{"messages": [' + b", ".join(encoded) + b"], " + static

    def messages(
        self,
        question: str,
        answer: str,
        contexts: Sequence[str],
        *,
        verify_claims: bool,
        checks: Sequence[str] = (),
        history: Sequence[Mapping[str, str]] = (),
    ) -> list[dict[str, str]]:
        return build_messages(
            question,
            answer,
            contexts,
            verify_claims=verify_claims,
            keys=_KEYS[verify_claims],
            checks=checks,
            history=history,
        )

    async def judge(
        self,
        question: str,
        answer: str,
        contexts: Sequence[str],
        *,
        verify_claims: bool = False,
        temperature: float | None = None,
        checks: Sequence[str] = (),
        history: Sequence[Mapping[str, str]] = (),
    ) -> JudgeVerdict:
        messages = self.messages(
            question, answer, contexts, verify_claims=verify_claims, checks=checks, history=history
        )
        temperature = self.temperature if temperature is None else temperature
        body = self._body(messages, verify_claims=verify_claims, temperature=temperature)
        n_contexts = len(contexts)

        def read(reply: bytes, started: float, attempts: int) -> JudgeVerdict:
            return self._verdict(reply, started, attempts, n_contexts=n_contexts, verify_claims=verify_claims)

        return await self.exchange(body, self.fleet.order(question, answer, contexts), read)

    async def exchange(self, body: bytes, servers: list[Server], read: Callable[[bytes, float, int], _T]) -> _T:
        """POST the chat completion ``body`` to ``servers`` in order, with this judge's retries, fail-over and
        concurrency cap; ``read(reply, started, attempts)`` turns the reply into the result or raises
        :class:`JudgeError`. Every call to the judge's model goes through here (the session judge's too)."""
        if not self._auth and self.base_url is None:
            raise JudgeError(f"{self.model}: no API key (pass api_key or set OPENAI_API_KEY)")
        pools, semaphore = self._client()
        started = time.perf_counter()
        now = time.monotonic()
        candidates = [server for server in servers if server.available(now)]
        if not candidates:
            back = min(server.down_until for server in servers) - now
            raise JudgeError(
                f"{self.model}: {_all(servers)} out after failing to answer; the next is tried again in {back:.1f} s",
                usage=self.usage_of(started, 0),
            )
        attempts = rounds = 0
        while True:
            for server in candidates:
                if rounds == 0 and server is not candidates[-1] and not server.available(time.monotonic()):
                    continue  # taken out by another call while this one waited
                attempts += 1
                if attempts > 1:
                    self.retries += 1
                try:
                    async with semaphore, timeout(self.timeout_s):
                        response = await pools[server].request(
                            b"POST", "/chat/completions", body, server.origin.basic_auth or self._auth
                        )
                    if response.status >= 400:
                        raise _HTTPError(response)
                except (asyncio.TimeoutError, TransportError, _HTTPError) as exc:
                    # Unreachable or too slow: out for a back-off. An error reply: alive, tried again next time.
                    server.failed(take_out=not isinstance(exc, _HTTPError))
                    last, failed_on = exc, server
                    if _retryable(exc):
                        continue
                    rounds = self.max_retries
                    break
                server.succeeded()
                return read(response.body, started, attempts)
            rounds += 1
            if rounds > self.max_retries:
                spent = "" if attempts == 1 else f" after {attempts} attempts"
                where = f" (last: {failed_on.name})" if len(servers) > 1 else ""
                raise JudgeError(
                    f"{self.model}: {_describe(last)}{spent}{where}{_detail(last)}",
                    usage=self.usage_of(started, attempts),
                )
            await asyncio.sleep(self._delay(last, rounds))
            now = time.monotonic()
            candidates = [server for server in servers if server.available(now)] or servers

    def _verdict(
        self, body: bytes, started: float, attempts: int, *, n_contexts: int, verify_claims: bool
    ) -> JudgeVerdict:
        """Straight from the reply's JSON to a validated :class:`JudgeOutput` (no SDK response models)."""
        try:
            reply = json.loads(body)
            usage = self.usage_of(started, attempts, reply.get("usage"))
            choices = reply.get("choices") or [None]
            choice = choices[0] or {}
            raw = (choice.get("message") or {}).get("content") or ""
            finish_reason = choice.get("finish_reason")
        except (ValueError, AttributeError, TypeError):
            snippet = body[:120].decode("utf-8", "replace")
            raise JudgeError(
                f"{self.model}: the reply is not a chat completion: {snippet!r}", usage=self.usage_of(started, attempts)
            ) from None
        if not isinstance(raw, str):
            raise JudgeError(f"{self.model}: the reply's message content is not text", usage=usage)
        if finish_reason == "length":
            raise JudgeError(f"{self.model}: reply cut off at max_tokens={self.max_tokens}", usage=usage, raw=raw)
        try:
            output = parse_judge_output(raw, n_contexts=n_contexts, verify_claims=verify_claims)
        except JudgeOutputError as exc:
            raise JudgeError(f"{self.model}: {exc}", usage=usage, raw=raw) from None
        return JudgeVerdict(output=output, usage=usage, raw=raw)

    def usage_of(self, started: float, attempts: int, usage: Any = None) -> JudgeUsage:
        """What a call spent: its tokens (from the reply's ``usage``), their price, its time, its attempts."""
        usage = usage if isinstance(usage, dict) else {}
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
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
            f"LLMJudge(model={self.model!r}, base_url={_shown(self.base_url)!r}, "
            f"structured_output={self.structured_output!r}, timeout_s={self.timeout_s}, max_retries={self.max_retries})"
        )


def _warn_about_proxies(servers: Sequence[Server]) -> None:
    """The lean client goes direct: say so when the environment names a proxy it would have used."""
    proxies = urllib.request.getproxies()
    for server in servers:
        origin = server.origin
        if origin.scheme in proxies and not urllib.request.proxy_bypass(origin.host):
            logger.warning(
                "ragtriage: %s_proxy is set, but judge calls to %s go direct (the judge's client does not use proxies)",
                origin.scheme,
                server.name,
            )


def _shown(base_url: str | tuple[str, ...] | None) -> str | list[str] | None:
    if base_url is None:
        return None
    return redact(base_url) if isinstance(base_url, str) else [redact(u) for u in base_url]


def _all(servers: Sequence[Server]) -> str:
    return f"the server ({servers[0].name}) is" if len(servers) == 1 else f"all {len(servers)} servers are"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _HTTPError):
        return exc.response.status in _RETRYABLE_STATUS
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _HTTPError):
        return f"HTTP {exc.response.status}"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"connection failed ({exc})"


def _detail(exc: BaseException) -> str:
    """The server's own error message, if it gave one."""
    message = error_message(exc.response.body) if isinstance(exc, _HTTPError) else ""
    return f": {message}" if message else ""


def _retry_after_s(exc: BaseException) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP date)."""
    if not isinstance(exc, _HTTPError):
        return None
    headers = exc.response.headers
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
