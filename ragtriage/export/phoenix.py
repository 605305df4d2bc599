"""Write evaluation results back into Phoenix, next to the evaluated trace.

Per evaluation:

* one ``EVALUATOR`` span in the evaluated trace (child of, and linked to, the
  evaluated root span, timed at the root's end with no duration so the trace's
  latency stays the app's: :func:`evaluator_span_time`) with OpenInference
  ``annotations.{i}.annotation.*`` attributes plus tier, cost and the
  evaluation's real latency. It is exported by ragtriage's own
  OTLP exporter, not the app's pipeline, so it is never evaluated itself and
  is in Phoenix before the annotations refer to its trace;
* Phoenix span annotations on the root span (REST ``/v1/span_annotations``),
  upserted under ``identifier = "ragtriage:<sample id>"`` so a re-delivered
  sample replaces, never duplicates;
* the same annotations on the trace (``/v1/trace_annotations``, same
  identifier), which the traces table filters by and Phoenix's "Trace
  annotation scores" chart plots;
* scores only where a mean of them means something: a judge scores every
  answer it decides, so its metrics and its verdict (pass 1, fail 0: the
  chart is the judges' pass rate) are annotated and scored. The free tiers
  only ever fail an answer: their verdict is labelled ``fail``, unscored, and
  carries the scores its evidence implies (``faithfulness`` 0) in its
  explanation and metadata, not as annotations of their own: as scores or as
  labels, every chart of those would show the failures alone
  (:meth:`~ragtriage.RAGEvaluationResult.scores` is the same rule for alerts
  and metrics);
* per-document relevance as document annotations on the retriever spans;
* later, for an audited sample, the auditor's verdict as ``audit_verdict`` on the same span and trace
  (:func:`audit_annotations`);
* once per writer: the annotation configs (:mod:`.annotation_configs`) and the
  project's id for links (:mod:`.links`), neither of which can fail a write.

Phoenix answers 404 while the annotated span has not arrived yet (the app's
exporter batches): that is retried with back-off, and after ``span_wait_s``
the annotations are handed to Phoenix's own queue (``sync=false``). Phoenix
unreachable: bounded retries, then the write is dropped and counted.

Hand-written REST rather than ``arize-phoenix-client``: the client has no
annotation-config calls, its errors would have to be unpicked for the
404-while-ingesting retry anyway, and ``import phoenix.client`` runs
``arize-phoenix``'s ``phoenix/__init__.py`` when that is installed (our
``phoenix`` extra): FastAPI, SQLAlchemy, the whole server, 20 s of CPU measured
on a shared two-core machine against 0.4 s for httpx. The host app would pay it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from ragtriage._log_hygiene import own_http, redact
from ragtriage.errors import WriteBackFailed
from ragtriage.evaluator.audit import AuditOutcome
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.export.annotation_configs import AUDIT_VERDICT, TIER, VERDICT, VERDICT_SCORES, AnnotationConfigs
from ragtriage.export.links import ProjectLinks
from ragtriage.export.sessions import session_annotations
from ragtriage.intake.extraction import OWN_SPAN
from ragtriage.metrics_registry import SCORES
from ragtriage.sample import RAGSample
from ragtriage.sessions.scorer import SessionScore

logger = logging.getLogger(__name__)

PROJECT_ATTRIBUTE = "openinference.project.name"
_EXPLANATION_CHARS = 2000


def span_annotations(sample: RAGSample, result: RAGEvaluationResult) -> list[dict[str, Any]]:
    """The Phoenix span annotations for one result: the verdict, the tier, and the metrics a judge measured (see
    the module docstring). A free-tier fail's implied scores ride on its verdict, not as annotations of their own."""
    span_id = f"{sample.root_span_id:016x}"
    identifier = f"ragtriage:{sample.sample_id}"
    kind = "LLM" if result.judged else "CODE"
    alerted = {a.metric for a in result.alerts}
    explanation = _explain(result)
    metadata: dict[str, Any] = {"tier": result.tier, "status": result.status, "sample_id": sample.sample_id}
    rows = [
        {
            "span_id": span_id,
            "name": name,  # the annotation is named as the metric is everywhere
            "annotator_kind": kind,
            "identifier": identifier,
            "result": {"score": score, "label": "fail" if name in alerted else "pass", "explanation": explanation},
            "metadata": metadata,
        }
        for name, score in result.scores(SCORES).items()
    ]
    seen = ", ".join(
        f"{'grounding' if tier == 'deterministic' else tier} {'-' if score is None else f'{score:.2f}'}"
        for tier, score in result.tier_scores.items()
    )  # each tier's faithfulness; the free tiers' is the share of the answer's terms some context supports
    tier_text = (
        f"status {result.status}; cost ${result.eval_cost_usd:.6f}; {result.eval_latency_ms:.1f} ms; "
        f"faithfulness by tier: {seen or 'none'}"
    )
    rows.append(
        {
            "span_id": span_id,
            "name": TIER,
            "annotator_kind": "CODE",
            "identifier": identifier,
            "result": {"label": result.tier or result.status, "explanation": tier_text},
            "metadata": {**metadata, "cost_usd": result.eval_cost_usd, "latency_ms": result.eval_latency_ms},
        }
    )
    verdict: dict[str, Any] = {"label": result.verdict, "explanation": explanation}
    if result.judged:
        verdict["score"] = VERDICT_SCORES.get(result.verdict)
    elif implied := {name: v for name in SCORES if (v := getattr(result, name)) is not None}:
        # what the certain evidence implies, and why: "certain (unsupported_number): ...; implies faithfulness 0"
        said = "; implies " + ", ".join(f"{name} {v:g}" for name, v in implied.items())
        verdict["explanation"] = explanation[: _EXPLANATION_CHARS - len(said)] + said
        metadata = {**metadata, "implied_scores": implied}
    rows.append(
        {
            "span_id": span_id,
            "name": VERDICT,
            "annotator_kind": kind,
            "identifier": identifier,
            "result": verdict,
            "metadata": metadata,
        }
    )
    return rows


def audit_annotations(sample: RAGSample, outcome: AuditOutcome) -> list[dict[str, Any]]:
    """The ``audit_verdict`` span annotation of one audit; none when the auditor gave no verdict (an error, the
    budget): the trace then carries nothing that could be read as one."""
    if outcome.audit_verdict is None:
        return []
    metadata = {
        "audited_tier": outcome.tier,
        "verdict": outcome.verdict,
        "auditor": outcome.auditor,
        "agrees": outcome.agrees,
        "status": outcome.status,
        "cost_usd": outcome.cost_usd,
        "sample_id": sample.sample_id,
    }
    result: dict[str, Any] = {"label": outcome.audit_verdict, "explanation": outcome.detail[:_EXPLANATION_CHARS]}
    if outcome.audit_verdict in VERDICT_SCORES:
        result["score"] = VERDICT_SCORES[outcome.audit_verdict]
    return [
        {
            "span_id": f"{sample.root_span_id:016x}",
            "name": AUDIT_VERDICT,
            "annotator_kind": "LLM",
            "identifier": f"ragtriage:{sample.sample_id}",
            "result": result,
            "metadata": metadata,
        }
    ]


def trace_annotations(sample: RAGSample, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The span annotations ``rows`` on the sample's trace (same names, same identifier)."""
    trace_id = f"{sample.trace_id:032x}"
    return [{**{k: v for k, v in row.items() if k != "span_id"}, "trace_id": trace_id} for row in rows]


def document_annotations(sample: RAGSample, result: RAGEvaluationResult) -> list[dict[str, Any]]:
    rows = []
    for doc, relevance in zip(sample.documents, result.document_relevance, strict=False):
        if relevance is None or not doc.in_phoenix:
            continue
        rows.append(
            {
                "span_id": f"{doc.span_id:016x}",
                "document_position": doc.position,
                "name": "document_relevance",
                "annotator_kind": "LLM",
                "result": {"score": relevance, "label": "relevant" if relevance >= 0.5 else "irrelevant"},
                "metadata": {"document_id": doc.id, "sample_id": sample.sample_id},
            }
        )
    return rows


def _explain(result: RAGEvaluationResult) -> str:
    parts = list(result.notes)
    if result.error:
        parts.append(f"error: {result.error}")
    return "; ".join(parts)[:_EXPLANATION_CHARS]


def evaluator_span_attributes(
    sample: RAGSample, result: RAGEvaluationResult, annotations: list[dict[str, Any]]
) -> dict[str, Any]:
    """The EVALUATOR span's attributes; ``annotations`` are the rows of :func:`span_annotations`."""
    attributes: dict[str, Any] = {
        "openinference.span.kind": "EVALUATOR",
        OWN_SPAN: True,
        "ragtriage.target_span_id": f"{sample.root_span_id:016x}",
        "ragtriage.sample_id": sample.sample_id,
        "ragtriage.tier": result.tier or "none",
        "ragtriage.verdict": result.verdict,
        "ragtriage.status": result.status,
        "ragtriage.cost_usd": result.eval_cost_usd,
        "ragtriage.latency_ms": result.eval_latency_ms,
        "ragtriage.prompt_tokens": result.prompt_tokens,
        "ragtriage.completion_tokens": result.completion_tokens,
        "input.value": sample.question,
        "output.value": result.verdict,
    }
    if result.error:
        attributes["ragtriage.error"] = result.error[:_EXPLANATION_CHARS]
    for i, row in enumerate(annotations):
        prefix = f"annotations.{i}.annotation."
        attributes[prefix + "name"] = row["name"]
        attributes[prefix + "annotator_kind"] = row["annotator_kind"]
        for key in ("score", "label", "explanation"):
            if row["result"].get(key) is not None:
                attributes[prefix + key] = row["result"][key]
    return attributes


class PhoenixWriter:
    """Writes EVALUATOR spans and annotations to one Phoenix server."""

    def __init__(
        self,
        *,
        endpoint: str,
        project_name: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
        max_retries: int = 3,
        span_wait_s: float = 30.0,
    ) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        if not isinstance(project_name, str) or not project_name:
            raise ValueError(f"project_name must be a non-empty string, got {project_name!r}")
        self.base_url = base_url(endpoint)
        self.project_name = project_name
        self._headers = {str(k).lower(): str(v) for k, v in (headers or {}).items()} | auth_headers(api_key)
        self._api_key = api_key
        self._timeout = timeout_s
        self._max_retries = max_retries
        self._span_wait_s = span_wait_s
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._ids = _SampleSpanIds()
        self._provider = TracerProvider(
            resource=Resource.create({PROJECT_ATTRIBUTE: project_name}), id_generator=self._ids
        )
        exporter = OTLPSpanExporter(
            endpoint=f"{self.base_url}/v1/traces", headers=self._headers or None, timeout=int(max(timeout_s, 1))
        )
        self._provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("ragtriage")
        self.configs = AnnotationConfigs(project_name)
        self.links = ProjectLinks(self.base_url, project_name)
        self.counts: Counter[str] = Counter()

    async def write(self, sample: RAGSample, result: RAGEvaluationResult) -> None:
        annotations = span_annotations(sample, result)
        with own_http(self._api_key):  # to_thread copies the marker to the OTLP export's thread
            await asyncio.to_thread(self._emit_span, sample, result, annotations)
            sync = await self._post("/v1/span_annotations", annotations)
            # the trace is in Phoenix once its root span is; if that span was not, do not wait for it twice
            await self._post("/v1/trace_annotations", trace_annotations(sample, annotations), sync=sync)
            documents = document_annotations(sample, result)
            if documents:
                await self._post("/v1/document_annotations", documents, sync=sync)
            await self.configs.ensure(self._client())
            await self.links.resolve(self._client())
        self.counts["writes"] += 1

    async def write_session(self, score: SessionScore) -> None:
        """A closed session's annotations (:mod:`.sessions`), on the session Phoenix made of its spans."""
        with own_http(self._api_key):
            await self._post("/v1/session_annotations", session_annotations(score, self.base_url))
        self.counts["session_writes"] += 1

    async def write_audit(self, sample: RAGSample, outcome: AuditOutcome) -> None:
        """Put an audit's verdict on the evaluated root span and its trace (after :meth:`write`, so no wait)."""
        rows = audit_annotations(sample, outcome)
        if not rows:
            return
        with own_http(self._api_key):
            sync = await self._post("/v1/span_annotations", rows)
            await self._post("/v1/trace_annotations", trace_annotations(sample, rows), sync=sync)
        self.counts["audits_written"] += 1

    def _emit_span(self, sample: RAGSample, result: RAGEvaluationResult, annotations: list[dict[str, Any]]) -> None:
        target = SpanContext(
            trace_id=sample.trace_id,
            span_id=sample.root_span_id,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        start, end = evaluator_span_time(sample, result)
        self._ids.next_span_id = evaluator_span_id(sample.sample_id)
        span = self._tracer.start_span(
            "ragtriage.evaluate",
            context=set_span_in_context(NonRecordingSpan(target)),
            links=[Link(target, {"ragtriage.link": "evaluated"})],
            attributes=evaluator_span_attributes(sample, result, annotations),
            start_time=start,
        )
        span.end(end_time=end)

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout)
            self._clients[loop] = client
        return client

    async def _post(self, path: str, rows: list[dict[str, Any]], *, sync: str = "true") -> str:
        """POST ``rows``; returns the ``sync`` it took: ``"false"`` when the span never arrived and Phoenix
        queued the rows."""
        client = self._client()
        waited_for_span = 0.0
        waits = failures = 0
        while True:
            try:
                response = await client.post(path, params={"sync": sync}, json={"data": rows})
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}"
                status = None
            else:
                status = response.status_code
                if status < 300:
                    return sync
                reason = f"HTTP {status}: {response.text[:200]}"
                if status == 404 and "do not exist" in response.text:
                    # The span is still in the app's export batch: wait for it, then let Phoenix queue it.
                    if waited_for_span >= self._span_wait_s:
                        sync = "false"
                        self.counts["annotations_queued_by_phoenix"] += 1
                        continue
                    delay = min(0.2 * 2**waits, 5.0)
                    waits += 1
                    waited_for_span += delay
                    self.counts["waits_for_span"] += 1
                    await asyncio.sleep(delay)
                    continue
                if status not in (408, 429) and status < 500:
                    self.counts["writes_rejected"] += 1
                    raise WriteBackFailed(f"Phoenix rejected {path}: {reason}")
            failures += 1
            if failures > self._max_retries:
                self.counts["writes_dropped"] += 1
                raise WriteBackFailed(f"Phoenix unreachable for {path} after {failures} attempts: {reason}")
            self.counts["retries"] += 1
            await asyncio.sleep(min(0.25 * 2**failures, 4.0) * random.uniform(0.5, 1.5))

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        await asyncio.to_thread(self._provider.shutdown)

    def __repr__(self) -> str:
        return f"PhoenixWriter(base_url={redact(self.base_url)!r}, project_name={self.project_name!r})"


def evaluator_span_time(sample: RAGSample, result: RAGEvaluationResult) -> tuple[int, int]:
    """The EVALUATOR span's (start, end), ns: no time at the end of the evaluated root span.

    Phoenix's trace latency is the extent of all the trace's spans (``traces.start_time``/``end_time``, widened
    by every span ingested), and a project's latency quantiles are over those extents; a span placed when the
    evaluation ran, seconds after the root ended, became the app's latency. Inside the root's interval, and with
    no duration, it changes neither; the evaluation's real latency is its ``ragtriage.latency_ms`` attribute.
    Without the root's times (a sample from before they were recorded), it ends when the evaluation did.
    """
    if sample.root_end_ns:
        return sample.root_end_ns, sample.root_end_ns
    end = time.time_ns()
    return end - int(result.eval_latency_ms * 1e6), end


def evaluator_span_id(sample_id: str) -> int:
    """The EVALUATOR span's id, derived from the sample id: a redelivered sample (a worker died after
    writing but before acknowledging) re-sends the same span instead of adding a second one, and a reader
    (``ragtriage report``) finds it from the evaluated span."""
    digest = hashlib.blake2b(f"ragtriage-evaluator:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


class _SampleSpanIds(RandomIdGenerator):
    """Random ids, except the span id set for the next span on this thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def next_span_id(self) -> int | None:
        return getattr(self._local, "span_id", None)

    @next_span_id.setter
    def next_span_id(self, value: int | None) -> None:
        self._local.span_id = value

    def generate_span_id(self) -> int:
        span_id, self._local.span_id = self.next_span_id, None
        return span_id or super().generate_span_id()


def parse_headers(pairs: tuple[str, ...] | None) -> dict[str, str]:
    """``("name=value", ...)`` (``PHOENIX_CLIENT_HEADERS``, URL-encoded as OTel's header variables) -> a dict;
    a pair without ``=`` is skipped."""
    headers = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if sep and name.strip():
            headers[unquote(name.strip()).lower()] = unquote(value.strip())
    return headers


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The header that carries a Phoenix API key (none without one)."""
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def base_url(endpoint: str) -> str:
    """``http://host:6006/v1/traces`` or ``http://host:6006/`` -> ``http://host:6006``."""
    endpoint = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1"):
        if endpoint.endswith(suffix):
            endpoint = endpoint[: -len(suffix)]
    return endpoint
