"""Cross-service trace assembly: spans of one trace from any number of services, joined by trace id.

A trace is complete when its global root (the span with no parent) has arrived and no new span of
the trace has arrived for ``quiet_s``, or when ``ttl_s`` has passed since its first span (then it is
evaluated if its root arrived, else counted as expired). Sampling is the same trace-id rule as
``instrument()``'s, so an app and a collector agree on which traces are evaluated. A completed trace's
id is remembered for ``ttl_s``, so a late span never makes a second sample: scores land once. A trace
over its sender's :class:`~ragtriage.collector.sender_cap.SenderCap` (the sender of its first sampled span) is
followed like the others but holds no spans and is never evaluated (``traces_over_sender_cap``).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable

from ragtriage.collector.auth import ANONYMOUS
from ragtriage.collector.otlp import ReceivedSpan
from ragtriage.collector.sender_cap import SenderCap
from ragtriage.intake.assembly import BufferedSpan
from ragtriage.intake.extraction import OWN_SPAN
from ragtriage.intake.sampling import TRACE_ID_MASK, sample_bound


class _Trace:
    __slots__ = ("first", "judged", "last", "root", "root_times", "spans")

    def __init__(self, now: float, judged: bool) -> None:
        self.first = self.last = now
        self.root = False
        self.judged = judged
        self.spans: list[BufferedSpan] = []
        self.root_times: tuple[int, int] = (0, 0)


class TraceAssembler:
    """Buffers sampled traces until complete; bounded in traces and in spans per trace. Not thread-safe:
    the collector calls it from its event loop only."""

    def __init__(
        self,
        *,
        sample_rate: float,
        quiet_s: float = 6.0,
        ttl_s: float = 300.0,
        max_traces: int = 10_000,
        max_spans_per_trace: int = 256,
        sender_cap: SenderCap | None = None,
    ) -> None:
        self._bound = sample_bound(sample_rate)
        self._quiet = quiet_s
        self._ttl = ttl_s
        self._max_traces = max_traces
        self._max_spans = max_spans_per_trace
        self._cap = sender_cap or SenderCap(None)
        self._traces: OrderedDict[int, _Trace] = OrderedDict()  # by last arrival, oldest first
        self._done: OrderedDict[int, float] = OrderedDict()  # completed trace id -> when, oldest first
        self.counts: Counter[str] = Counter()
        #: The global root's (start, end) ns of each trace :meth:`complete` returned, until the caller takes it.
        self.root_times: dict[int, tuple[int, int]] = {}

    def sampled(self, trace_id: int) -> bool:
        """The trace-id rule of ``RAGEvaluator.should_sample`` and ``EvalSpanProcessor``."""
        return trace_id & TRACE_ID_MASK < self._bound

    def add(self, spans: Iterable[ReceivedSpan], now: float, sender: str = ANONYMOUS) -> None:
        """Buffer the sampled spans of one request from ``sender`` (spans of unsampled traces are only counted)."""
        for span in spans:
            if span.attributes is None:
                self.counts["spans_not_sampled"] += 1
                continue
            if OWN_SPAN in span.attributes:  # ragtriage's own EVALUATOR spans are never evaluated
                continue
            trace = self._traces.get(span.trace_id)
            if trace is None:
                if span.trace_id in self._done:
                    self.counts["spans_late"] += 1  # the trace was evaluated already: never twice
                    continue
                if len(self._traces) >= self._max_traces:
                    self.counts["traces_dropped_buffer_full"] += 1
                    continue
                judged = self._cap.admit(sender, now)
                trace = self._traces[span.trace_id] = _Trace(now, judged)
                self.counts["traces_sampled" if judged else "traces_over_sender_cap"] += 1
            else:
                self._traces.move_to_end(span.trace_id)
            trace.last = now
            is_root = span.parent_span_id == 0
            trace.root = trace.root or is_root
            if is_root:
                trace.root_times = (span.start_ns, span.end_ns)
            if not trace.judged:
                continue
            if len(trace.spans) < self._max_spans or is_root:
                trace.spans.append((span.attributes, span.span_id, span.parent_span_id, is_root))
            else:
                self.counts["spans_dropped_trace_full"] += 1

    def complete(self, now: float) -> list[tuple[int, list[BufferedSpan]]]:
        """Take the traces that are complete at ``now``, and forget the expired ones."""
        done: list[tuple[int, list[BufferedSpan]]] = []
        for trace_id, trace in list(self._traces.items()):
            if now - trace.last < self._quiet:
                break  # ordered by last arrival: every later trace is still receiving
            if trace.root or now - trace.first >= self._ttl:
                del self._traces[trace_id]
                self._done[trace_id] = now
                if not trace.judged:
                    continue  # over its sender's cap: forwarded, never evaluated
                if trace.root:
                    done.append((trace_id, trace.spans))
                    self.root_times[trace_id] = trace.root_times
                else:
                    self.counts["traces_expired"] += 1  # its root never arrived
        while self._done and (
            now - next(iter(self._done.values())) > self._ttl or len(self._done) > 4 * self._max_traces
        ):
            self._done.popitem(last=False)
        return done

    @property
    def in_flight(self) -> int:
        return len(self._traces)
