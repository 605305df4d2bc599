"""EvalSpanProcessor: the SDK adapter that picks RAG traces out of the app's spans for evaluation.

The app's threads only ever do O(1) work here: a dict lookup, a few attribute
reads, an append to a bounded queue. A completed trace goes to the in-process hand-off
(:class:`~ragtriage.handoff.thread.ThreadHandoff`): on its background thread the trace is assembled
(:mod:`ragtriage.intake`) and each sample given to the handler the processor was given (the pipeline
itself, the evaluator process, or the queue). Nothing raises into the app; everything that is dropped is
counted.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import os
import threading
import time
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ragtriage.handoff.consumer import BoundedConsumer, tally
from ragtriage.handoff.thread import ThreadHandoff
from ragtriage.intake.assembly import BufferedSpan, assemble, explain, stats_key
from ragtriage.intake.extraction import FALLBACK_CONTEXTS, KIND, OWN_SPAN
from ragtriage.intake.sampling import TRACE_ID_MASK, sample_bound
from ragtriage.pipeline import SampleHandler
from ragtriage.sample import RAGSample

logger = logging.getLogger(__name__)
explain_logger = logging.getLogger("ragtriage.explain")
#: Spans whose documents are contexts (a reranker's output documents replace its input's).
_CONTEXT_KINDS = ("RETRIEVER", "RERANKER")
#: How often an idle worker looks at the queue; force_flush() and shutdown() wake it at once. Every
#: look takes the GIL from the app's thread; at 200 ms instead of 50 ms the worker's CPU per sample at
#: sample rate 0.1 fell by a fifth (bench/span_processor.py), and a sample waits at most 0.2 s longer.
_POLL_S = 0.2
#: At interpreter exit, how long the worker gets to close its connections once its queue is flushed or dropped.
_EXIT_CLOSE_S = 2.0
#: After this many local roots not sampled, and none sampled, say so once at INFO (a first try that scores nothing).
_NOTHING_SAMPLED_AFTER = 20


class _TraceBuffer:
    """One in-flight trace: references to its spans' (immutable, ended) attribute dicts, nothing copied.

    A trace can have several local roots in one process (the service was called twice within it); the
    buffer is complete when the last of them ends, and each root becomes its own sample."""

    __slots__ = ("expires", "open_roots", "rag", "root_times", "spans")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.open_roots = 1
        self.rag = False
        self.spans: list[BufferedSpan] = []
        self.root_times: dict[int, tuple[int, int]] = {}  # local root span id -> (start, end) ns


@dataclass(slots=True)
class _CompletedTrace:
    trace_id: int
    spans: list[BufferedSpan]
    rag: bool = True  # False: queued only to be explained (``explain_traces``), never evaluated
    root_times: dict[int, tuple[int, int]] | None = None


class EvalSpanProcessor(SpanProcessor):
    """An OpenTelemetry SDK ``SpanProcessor`` that evaluates sampled RAG traces.

    Sampling is decided once per trace at its (local) root from the trace id,
    so every span of a trace and every service agree.
    """

    def __init__(
        self,
        handler: SampleHandler,
        *,
        sample_rate: float = 0.1,
        max_queue_size: int = 2048,
        max_traces_in_flight: int = 10_000,
        max_spans_per_trace: int = 256,
        trace_ttl_s: float = 300.0,
        max_concurrency: int = 8,
        explain_traces: int = 0,
        exit_flush_timeout_s: float = 5.0,
    ) -> None:
        if not isinstance(handler, SampleHandler):
            raise TypeError(f"handler must be a SampleHandler (ragtriage.pipeline.SampleHandler), got {handler!r}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float) or not 0 <= sample_rate <= 1:
            raise ValueError(f"sample_rate must be a number in [0, 1], got {sample_rate!r}")
        for name, value in (
            ("max_queue_size", max_queue_size),
            ("max_traces_in_flight", max_traces_in_flight),
            ("max_spans_per_trace", max_spans_per_trace),
            ("max_concurrency", max_concurrency),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(explain_traces, bool) or not isinstance(explain_traces, int) or explain_traces < 0:
            raise ValueError(f"explain_traces must be an int >= 0, got {explain_traces!r}")
        if isinstance(trace_ttl_s, bool) or not isinstance(trace_ttl_s, int | float) or trace_ttl_s <= 0:
            raise ValueError(f"trace_ttl_s must be a positive number, got {trace_ttl_s!r}")
        if (
            isinstance(exit_flush_timeout_s, bool)
            or not isinstance(exit_flush_timeout_s, int | float)
            or not 0 <= exit_flush_timeout_s < math.inf
        ):
            raise ValueError(f"exit_flush_timeout_s must be a number >= 0, got {exit_flush_timeout_s!r}")
        self.handler = handler
        self.sample_rate = float(sample_rate)
        self._max_traces = max_traces_in_flight
        self._max_spans = max_spans_per_trace
        self._ttl = float(trace_ttl_s)
        self._explain_traces = explain_traces
        self.exit_flush_timeout_s = float(exit_flush_timeout_s)
        #: Set by ``instrument()``: flushes the app's other span processors (its exporter), given a timeout in ms.
        #: At exit it runs first, so the roots reach Phoenix before the write-back waits for them: a
        #: ``BatchSpanProcessor`` (``register(batch=True)``) would send them only after its schedule delay, or at
        #: the OTel SDK's own exit, which comes after this one.
        self.flush_app_spans: Callable[[int], object] | None = None
        self._bound = sample_bound(self.sample_rate)  # RAGEvaluator.should_sample's rule, inlined for the hot path
        self._init_state()
        consumer: BoundedConsumer[_CompletedTrace] = BoundedConsumer(
            self._process,
            max_queue_size=max_queue_size,
            concurrency=max_concurrency,
            process_batch=self._process_batch if handler.batched else None,
            on_error=self._internal_error,
            on_idle=self._expire_now,
            poll_s=_POLL_S,
        )
        self._handoff = ThreadHandoff(
            consumer, close=handler.aclose, finish=handler.finish, on_error=self._internal_error
        )
        ref = weakref.WeakMethod(self._at_fork_reinit)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())
        _call_at_exit(weakref.WeakMethod(self._at_exit))

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._traces: OrderedDict[int, _TraceBuffer] = OrderedDict()
        self._counts: Counter[str] = Counter()
        # The counter every trace bumps, lock-free: next() on itertools.count is one C call.
        self._not_sampled = itertools.count()
        self._shutdown = False
        self._exited = False  # past interpreter exit: what still fails is expected, and not worth a traceback
        self._last_error_log = -math.inf
        self._explained: deque[dict[str, Any]] | None = (
            deque(maxlen=self._explain_traces) if self._explain_traces else None
        )

    def _at_fork_reinit(self) -> None:
        """In a forked child: fresh locks and buffers; the parent's in-flight traces are not ours (the hand-off
        starts afresh on its own)."""
        shutdown = self._shutdown
        self._init_state()
        self._shutdown = shutdown

    # -- SDK contract: called on the app's threads ----------------------------------------------------

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        try:
            parent = span.parent
            if (parent is not None and not parent.is_remote) or self._shutdown:
                return  # not a local root: its trace was decided when the root started
            trace_id = span.get_span_context().trace_id
            if trace_id & TRACE_ID_MASK >= self._bound:  # RAGEvaluator.should_sample's rule, without two calls
                if next(self._not_sampled) == _NOTHING_SAMPLED_AFTER - 1 and not self._counts["traces_sampled"]:
                    self._say_nothing_sampled()
                return
            now = time.monotonic()
            with self._lock:
                self._expire(now)
                buffer = self._traces.get(trace_id)
                if buffer is not None:  # another local root of a trace already in flight here
                    buffer.open_roots += 1
                    return
                if len(self._traces) >= self._max_traces:
                    self._counts["traces_dropped_buffer_full"] += 1
                    return
                self._traces[trace_id] = _TraceBuffer(now + self._ttl)
                self._counts["traces_sampled"] += 1
        except Exception:
            self._internal_error()

    def _say_nothing_sampled(self) -> None:
        logger.info(
            "ragtriage: none of the first %d traces was sampled for evaluation (sample_rate=%g). To evaluate every "
            "trace while trying ragtriage out, set sample_rate=1.0 (RAGTRIAGE_SAMPLE_RATE); lower it under real "
            "traffic to bound the judges' cost",
            _NOTHING_SAMPLED_AFTER,
            self.sample_rate,
        )

    def on_end(self, span: ReadableSpan) -> None:
        if not self._traces:
            return  # no sampled trace in flight: at a low sample rate, most spans
        try:
            ctx = span.get_span_context()
            if ctx is None:
                return
            buffer = self._traces.get(ctx.trace_id)
            if buffer is None:
                return
            attributes = _attribute_dict(span)
            if OWN_SPAN in attributes:
                return
            parent = span.parent
            is_root = parent is None or parent.is_remote
            if len(buffer.spans) < self._max_spans or is_root:  # the root (question, answer) always counts
                # A reference, not a copy: an ended span's attributes no longer change. Extraction
                # happens on the background thread; here only two dict lookups.
                parent_id = 0 if is_root else parent.span_id  # type: ignore[union-attr]  # not a root: has a parent
                buffer.spans.append((attributes, ctx.span_id, parent_id, is_root))
                if attributes.get(KIND) in _CONTEXT_KINDS or FALLBACK_CONTEXTS in attributes:
                    buffer.rag = True
            else:
                self._count("spans_dropped_trace_full")
            if is_root:
                buffer.root_times[ctx.span_id] = (span.start_time or 0, span.end_time or 0)
                with self._lock:
                    buffer.open_roots -= 1
                    if buffer.open_roots > 0:
                        return  # the trace's other local root is still running
                    self._traces.pop(ctx.trace_id, None)
                if buffer.rag:
                    self._enqueue(_CompletedTrace(ctx.trace_id, buffer.spans, root_times=buffer.root_times))
                else:
                    self._count(stats_key("no_retrieval"))
                    if self._explained is not None:  # debugging: say why, off the app's thread
                        self._enqueue(_CompletedTrace(ctx.trace_id, buffer.spans, rag=False))
        except Exception:
            self._internal_error()

    def _assemble(self, trace: _CompletedTrace) -> list[RAGSample]:
        """Question, contexts and answer per local root of a completed trace (background thread)."""
        if self._explained is not None:
            self._explain(trace)
        if not trace.rag:
            return []
        samples, skipped = assemble(trace.trace_id, trace.spans)
        for reason, n in skipped.items():
            self._count(stats_key(reason), n)
        for sample in samples:
            sample.root_start_ns, sample.root_end_ns = (trace.root_times or {}).get(sample.root_span_id, (0, 0))
        return samples

    def _explain(self, trace: _CompletedTrace) -> None:
        explanation = explain(trace.trace_id, trace.spans)
        assert self._explained is not None
        self._explained.append(explanation)
        explain_logger.info("%s", json.dumps(explanation, ensure_ascii=False, default=str))

    def explanations(self) -> list[dict[str, Any]]:
        """With ``explain_traces=N``: the last N completed traces, what each span gave and why each local root
        was or was not evaluated (also logged on the ``ragtriage.explain`` logger). Empty otherwise."""
        return list(self._explained or ())

    def _enqueue(self, trace: _CompletedTrace) -> None:
        # No wake-up: the background thread polls every _POLL_S. A wake-up per sample costs the app a syscall
        # and a GIL hand-off to the worker (measured: most of the processor's cost at sample_rate 0.1).
        # Traces queued only to be explained are not samples: neither their queueing nor their drop counts.
        self._handoff.offer(trace, counted=trace.rag)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every queued and in-flight evaluation (and its write-back) is done."""
        return self._handoff.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Finish what is queued (bounded), score the sessions still open (within ``exit_flush_timeout_s``),
        stop the worker. Idempotent."""
        if self._shutdown:
            return
        self._shutdown = True
        self._flush_app_spans()  # uninstrument() before the app's batch went out
        self._handoff.shutdown(30.0, finish_s=self.exit_flush_timeout_s)
        self._say_what_was_left("at shutdown", 0, 0, 0)

    def _at_exit(self) -> None:
        """Interpreter exit, before the thread pools stop (write-back still works): within
        ``exit_flush_timeout_s``, finish what is queued, then score the sessions still open; drop the rest,
        stop the worker, and say in one line what was left."""
        if self._shutdown:
            return
        self._shutdown = True  # no new traces
        deadline = time.monotonic() + self.exit_flush_timeout_s
        self._flush_app_spans()
        self._handoff.flush(max(deadline - time.monotonic(), 0.0))
        self._exited = True
        open_traces = len(self._traces)
        # what is left of the budget goes to the open sessions; the worker closes its connections while it can
        given_up, running = self._handoff.abandon(_EXIT_CLOSE_S, finish_s=max(deadline - time.monotonic(), 0.0))
        queued = sum(1 for trace in given_up if trace.rag)
        self._say_what_was_left("at exit", queued, running, open_traces)

    def _flush_app_spans(self) -> None:
        """Send the app's own spans first (``flush_app_spans``): the write-back waits for their roots in Phoenix."""
        if self.flush_app_spans is not None:
            self.flush_app_spans(int(self.exit_flush_timeout_s * 1000))

    def _say_what_was_left(self, when: str, queued: int, running: int, open_traces: int) -> None:
        """One line for everything the end could not finish: samples not evaluated, sessions not written."""
        sessions = self._handoff.unfinished
        parts = []
        if queued or running:
            self._count("samples_lost_at_exit", queued + running)
            # in flight: judged, or written to Phoenix (where an unreachable Phoenix keeps them, not the judge)
            parts.append(
                f"{queued + running} sample(s) were not finished ({queued} queued, {running} being judged or "
                "written back)"
            )
            if open_traces:
                parts.append(f"{open_traces} trace(s) were still open")
        if sessions:
            self._count("sessions_lost_at_exit", sessions)
            parts.append(f"{sessions} open session(s) were not written")
        elif sessions is None:  # the worker was still closing them when its time was up
            parts.append("the open sessions were not closed in time")
        if parts:
            logger.warning(
                "ragtriage: %s, %s after waiting %.1f s; raise exit_flush_timeout_s (RAGTRIAGE_EXIT_FLUSH_TIMEOUT_S) "
                "to wait longer",
                when,
                " and ".join(parts),
                self.exit_flush_timeout_s,
            )

    # -- introspection ---------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters: sampled / not sampled traces, queued and dropped samples, errors, ..."""
        with self._lock:
            counts = dict(self._counts)
        consumer = self._handoff.consumer
        for name, value in (
            ("traces_not_sampled", tally(self._not_sampled)),
            ("samples_queued", consumer.queued),
            ("samples_dropped_queue_full", consumer.dropped),
        ):
            if value:
                counts[name] = value
        for name, value in self.handler.counts.items():  # e.g. the queue publisher's
            counts[self.handler.stats_prefix + name] = value
        counts["traces_in_flight"] = len(self._traces)
        counts["queue_size"] = consumer.queue_size
        return counts

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _expire_now(self) -> None:
        with self._lock:
            self._expire(time.monotonic())

    def _expire(self, now: float) -> None:
        """Drop traces whose root never ended; oldest first, so this is O(expired). Caller holds the lock."""
        while self._traces:
            trace_id, buffer = next(iter(self._traces.items()))
            if buffer.expires > now:
                break
            del self._traces[trace_id]
            self._counts["traces_expired"] += 1

    def _internal_error(self) -> None:
        self._count("internal_errors")
        if self._exited:
            logger.debug("ragtriage: error in the span processor after interpreter exit began", exc_info=True)
            return
        now = time.monotonic()
        if now - self._last_error_log > 60:
            self._last_error_log = now
            logger.exception("ragtriage: internal error in the span processor (the app is not affected)")

    # -- on the hand-off's background thread ----------------------------------------------------------

    async def _process(self, trace: _CompletedTrace) -> None:
        for sample in self._assemble(trace):
            await self.handler(sample)

    async def _process_batch(self, traces: list[_CompletedTrace]) -> None:
        samples = [sample for trace in traces for sample in self._assemble(trace)]
        if samples:
            await self.handler.handle_batch(samples)


def _call_at_exit(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    """Call ``method`` (while its object lives) when the interpreter exits, before the thread pools stop.

    ``concurrent.futures`` stops every thread pool from a ``threading._register_atexit`` hook, and any
    ``run_in_executor``/``asyncio.to_thread`` after it raises "cannot schedule new futures after shutdown";
    ``atexit`` (where the OTel SDK shuts providers down) runs later still. Those hooks run newest first, so
    importing ``concurrent.futures.thread`` first puts ours ahead of the pools' stop. A CPython-internal function:
    without it, ``atexit`` is used, and an app that ends without ``shutdown()`` may lose its last samples.
    """
    import concurrent.futures.thread  # noqa: F401  (registers the pools' stop before ours)

    def call() -> None:
        try:
            if (bound := method()) is not None:
                bound()
        except Exception:  # a hook that raises would skip the others, the thread pools' stop included
            logger.debug("ragtriage: exit flush failed", exc_info=True)

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError("no threading._register_atexit")
        register(call)
    except RuntimeError:  # already exiting, or another Python
        atexit.register(call)


def _attribute_dict(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes as a plain dict, read-only here.

    ``span.attributes`` is a proxy over ``BoundedAttributes``, whose ``.get`` raises and catches a
    ``KeyError`` for every missing key (~1 us each); extraction probes a dozen keys per span on the
    app's thread, so go to the SDK's underlying dict when it is there, else copy once.
    """
    raw = getattr(getattr(span, "_attributes", None), "_dict", None)
    return raw if isinstance(raw, dict) else dict(span.attributes or {})
