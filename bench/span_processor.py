"""EvalSpanProcessor: app-thread cost per RAG trace, and memory under 1M spans with leaked roots.

    python bench/span_processor.py

(~2 minutes on 2 cores: the two memory children run in parallel. `--quick` shrinks both parts for a smoke run;
`--memory-child {baseline,eval}` is internal.)

Part 1 - app-thread cost. Three TracerProviders, each with a BatchSpanProcessor over a no-op
SpanExporter (returns SUCCESS): (a) that alone, the baseline; (b) + EvalSpanProcessor(
RAGEvaluator(sample_rate=0.1), writer=None); (c) + EvalSpanProcessor at sample_rate=1.0 whose
local judge (LLMJudge) points at a loopback JudgeServer whose replies block (a hung judge), so
8 evaluations hang, the 2048-slot queue fills and every later sample is dropped. Each timed
batch is N consecutive 3-span OpenInference RAG traces (CHAIN root, RETRIEVER, LLM) on this
(the app's) thread, timed with time.perf_counter; configurations are interleaved in shuffled
order over several rounds and the median per-trace time of each is reported. Goals: added cost
vs baseline <= 10% at 0.1, <= 25% at 1.0 with a hung judge.

Part 2 - memory. In a fresh child interpreter per configuration (so one's freed memory does not
hide the other's growth), 1,000,000 spans in 100,000 traces of 10 small spans each; every tenth
trace never ends its root (start root, start/end 9 children, the root is never ended and dropped).
Measures VmRSS (/proc/self/status) before/after. "eval": a TracerProvider with ONLY
EvalSpanProcessor(RAGEvaluator(sample_rate=1.0), writer=None, max_traces_in_flight=10_000);
"baseline": the same workload on a TracerProvider with no processors. Goal: growth <= 50 MB.

Loopback only; stops by itself (the hung judge is released at the end).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from ragtriage import EvalSpanProcessor, LLMJudge, RAGEvaluator
from ragtriage.testing import JudgeServer, Reply, verdict_json

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
DOCS = ["Paris is the capital and largest city of France.", "Lyon is in France."]


class NoopExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def rag_request(tracer) -> None:
    """Same shape as tests/test_span_processor.py::rag_request."""
    with tracer.start_as_current_span(
        "rag", attributes={"openinference.span.kind": "CHAIN", "input.value": QUESTION}
    ) as root:
        attrs = {"openinference.span.kind": "RETRIEVER", "input.value": QUESTION}
        for i, doc in enumerate(DOCS):
            attrs[f"retrieval.documents.{i}.document.content"] = doc
            attrs[f"retrieval.documents.{i}.document.id"] = f"doc-{i}"
            attrs[f"retrieval.documents.{i}.document.score"] = 1.0 - i / 10
        with tracer.start_as_current_span("retrieve", attributes=attrs):
            pass
        with tracer.start_as_current_span("llm", attributes={"openinference.span.kind": "LLM"}):
            pass
        root.set_attribute("output.value", ANSWER)


# -- part 1 -------------------------------------------------------------------------------------------


def part1(n: int, rounds: int) -> None:
    gate = threading.Event()  # never set until the end: the judge hangs
    judge = JudgeServer(default=Reply(verdict_json(), block=gate)).start()
    configs: dict[str, tuple[TracerProvider, EvalSpanProcessor | None]] = {}

    def provider(eval_proc: EvalSpanProcessor | None) -> TracerProvider:
        tp = TracerProvider(shutdown_on_exit=False)
        tp.add_span_processor(BatchSpanProcessor(NoopExporter()))
        if eval_proc is not None:
            tp.add_span_processor(eval_proc)
        return tp

    async def skip(sample: object) -> None:  # the processor's own cost, without evaluating anything
        return None

    p_b0 = EvalSpanProcessor(RAGEvaluator(sample_rate=0.1), writer=None, handler=skip)
    p_b = EvalSpanProcessor(RAGEvaluator(sample_rate=0.1), writer=None)
    hung = LLMJudge(model="m", base_url=judge.url, timeout_s=600, max_retries=0)
    p_c = EvalSpanProcessor(RAGEvaluator(sample_rate=1.0, cache=False, local_judge=hung), writer=None)
    configs["a baseline (BSP+noop)"] = (provider(None), None)
    configs["b0 +processor rate=0.1, no-op handler"] = (provider(p_b0), p_b0)
    configs["b +eval rate=0.1"] = (provider(p_b), p_b)
    configs["c +eval rate=1.0 hung judge"] = (provider(p_c), p_c)
    tracers = {k: tp.get_tracer("app") for k, (tp, _) in configs.items()}

    # warm up; for (c) enough traces to fill 8 in-flight + 2048 queued, so timing is the overflow steady state
    for name, tracer in tracers.items():
        for _ in range(3000 if name.startswith("c") else 1000):
            rag_request(tracer)
    time.sleep(0.5)
    print(f"after warm-up: judge in flight={judge.in_flight}, (c) stats={p_c.stats}", flush=True)

    samples: dict[str, list[float]] = {k: [] for k in configs}
    order = list(configs)
    rng = random.Random(1)
    perf = time.perf_counter
    for r in range(rounds):
        rng.shuffle(order)
        for name in order:
            tracer = tracers[name]
            gc.collect()
            t0 = perf()
            for _ in range(n):
                rag_request(tracer)
            samples[name].append((perf() - t0) / n * 1e6)
        print(
            f"round {r + 1}/{rounds}: " + ", ".join(f"{k.split()[0]}={samples[k][-1]:.1f}us" for k in configs),
            flush=True,
        )

    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["a baseline (BSP+noop)"]
    print(f"\nPART 1: app-thread time per 3-span RAG trace, median of {rounds} rounds x {n} traces")
    for name, m in med.items():
        lo, hi = min(samples[name]), max(samples[name])
        extra = "" if name.startswith("a") else f"  added {100 * (m - base) / base:+.1f}% vs baseline"
        print(f"  {name:30s} {m:7.2f} us/trace (min {lo:.2f}, max {hi:.2f}){extra}")
    print("  goals: (b) <= +10%, (c) <= +25%; b0 shows the share of (b) that is the processor itself")
    print(f"  (b) stats: {p_b.stats}")
    print(f"  (c) stats: {p_c.stats}  judge requests={len(judge.requests)} in_flight={judge.in_flight}", flush=True)

    # clean up without waiting for the hung evaluations: release the judge, stop the server
    gate.set()
    for tp, proc in configs.values():
        if proc is p_c:
            continue  # its shutdown would flush ~2000 queued evaluations; the process exits anyway
        tp.shutdown()
    judge.stop()


# -- part 2 -------------------------------------------------------------------------------------------


def memory_child(kind: str, traces: int) -> None:
    tp = TracerProvider(shutdown_on_exit=False)
    proc = None
    if kind == "eval":
        proc = EvalSpanProcessor(RAGEvaluator(sample_rate=1.0), writer=None, max_traces_in_flight=10_000)
        tp.add_span_processor(proc)
    tracer = tp.get_tracer("app")
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    for t in range(traces):
        root = tracer.start_span("rag", attributes={"openinference.span.kind": "CHAIN", "input.value": f"q{t}"})
        ctx = root.get_span_context()
        from opentelemetry.trace import set_span_in_context

        parent = set_span_in_context(root)
        for c in range(9):
            if c == 0:
                attrs = {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.content": "doc"}
            elif c == 1:
                attrs = {"openinference.span.kind": "LLM"}
            else:
                attrs = {"k": c}
            tracer.start_span(f"s{c}", context=parent, attributes=attrs).end()
        if t % 10 != 9:
            root.set_attribute("output.value", "a")
            root.end()
        del root, parent, ctx
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_mb()
    out = {
        "kind": kind,
        "spans": traces * 10,
        "traces": traces,
        "seconds": elapsed,
        "spans_per_s": traces * 10 / elapsed,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "growth_mb": after - before,
        "stats": proc.stats if proc is not None else None,
    }
    if proc is not None:  # wait for the queue to drain, then measure again
        proc.force_flush(60_000)
        gc.collect()
        out["rss_after_flush_mb"] = rss_mb()
        out["stats_after_flush"] = proc.stats
    print(json.dumps(out), flush=True)
    os._exit(0)


def part2(traces: int) -> None:
    print(
        f"\nPART 2: memory, {traces * 10:,} spans in {traces:,} traces (10 spans each, every 10th root never ends)",
        flush=True,
    )
    results = {}
    # both children at once (2 cores) to keep the run short; RSS is per process
    procs = {
        kind: subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--memory-child", kind, "--traces", str(traces)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind in ("baseline", "eval")
    }
    for kind, child in procs.items():
        stdout, stderr = child.communicate(timeout=600)
        res = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
        if res.returncode != 0:
            print(res.stderr)
            raise SystemExit(f"memory child {kind} failed")
        results[kind] = r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"  {kind:8s}: {r['seconds']:.1f} s ({r['spans_per_s']:,.0f} spans/s), RSS {r['rss_before_mb']:.1f} -> "
            f"{r['rss_after_mb']:.1f} MB, growth {r['growth_mb']:+.1f} MB",
            flush=True,
        )
        if r["stats"] is not None:
            print(f"            stats: {r['stats']}")
            print(
                f"            after force_flush: RSS {r['rss_after_flush_mb']:.1f} MB, stats: {r['stats_after_flush']}"
            )
    extra = results["eval"]["growth_mb"] - results["baseline"]["growth_mb"]
    print(f"  ragtriage growth {results['eval']['growth_mb']:+.1f} MB (goal <= 50 MB); minus baseline: {extra:+.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-child", choices=["baseline", "eval"])
    ap.add_argument("--traces", type=int, default=100_000)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.traces)
        return
    print(f"python {sys.version.split()[0]}, nproc {os.cpu_count()}", flush=True)
    t0 = time.time()
    if args.quick:
        part1(n=500, rounds=3)
        part2(traces=5_000)
    else:
        part1(n=2000, rounds=7)
        part2(traces=args.traces)
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
