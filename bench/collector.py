"""`ragtriage collect`: throughput on one core, memory with 100,000 traces in flight, latency it adds.

Part 1, throughput. The collector runs in this process on one event loop (uvicorn, as `ragtriage collect`
runs it), evaluating at sample rate 0.1 with the free tiers and forwarding every request to a sink in
another process. Load comes from other processes: OTLP/protobuf requests of 512 spans (128 traces of 4
spans: a CHAIN root with question and answer, a RETRIEVER with two ~1 KB documents, an LLM span, a tool
span), each request with fresh trace ids. Reported: spans received and forwarded per second of this
process's CPU time (``time.process_time``: "one core"), and per wall second. Baseline in the same run:
the same requests to a bare uvicorn app that reads the body and answers 200 (the HTTP floor).

Part 2, memory: a TraceAssembler holding 100,000 sampled traces of 4 spans (roots not yet arrived), RSS
measured in a fresh process before and after; and past ``max_traces`` nothing more is held.

Part 3, latency added: the exporter's POST time for one small request (one trace), p50 and p99, to the
collector (which forwards to Phoenix) and straight to the same `phoenix serve`, interleaved, in one run.

    python bench/collector.py [--seconds 10] [--clients 2] [--no-phoenix]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

SPANS_PER_TRACE = 4
TRACES_PER_REQUEST = 128
DOC = "The Eiffel Tower was completed on 31 March 1889 for the World's Fair in Paris. " * 12


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def template() -> ExportTraceServiceRequest:
    """One request of TRACES_PER_REQUEST traces; trace ids are rewritten per request."""
    spans = []
    for t in range(TRACES_PER_REQUEST):
        root = (t + 1).to_bytes(8, "big")
        spans.append(
            Span(
                name="rag",
                span_id=root,
                attributes=[
                    _kv("openinference.span.kind", "CHAIN"),
                    _kv("input.value", "When was the Eiffel Tower completed?"),
                    _kv("output.value", "It was completed on 31 March 1889."),
                ],
            )
        )
        retriever = [_kv("openinference.span.kind", "RETRIEVER")]
        for i in range(2):
            retriever += [
                _kv(f"retrieval.documents.{i}.document.content", DOC),
                _kv(f"retrieval.documents.{i}.document.id", f"d{i}"),
            ]
        for kind, attrs in (("retrieve", retriever), ("llm", [_kv("openinference.span.kind", "LLM")]), ("tool", [])):
            spans.append(Span(name=kind, span_id=os.urandom(8), parent_span_id=root, attributes=attrs))
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


def bodies(request: ExportTraceServiceRequest) -> bytes:
    ids = [os.urandom(16) for _ in range(TRACES_PER_REQUEST)]
    for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        span.trace_id = ids[i // SPANS_PER_TRACE]
    return request.SerializeToString()


def client(port: int, seconds: float, out: mp.Queue) -> None:
    request = template()
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/x-protobuf"}
    sent = rejected = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.request("POST", "/v1/traces", body=bodies(request), headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            sent += 1
        else:
            rejected += 1
    out.put((sent, rejected))


async def sink_app(scope, receive, send) -> None:  # the forward target, and the HTTP floor
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def serve_in_thread(app, port: int = 0):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, server.servers[0].sockets[0].getsockname()[1]


def run_load(port: int, seconds: float, clients: int) -> tuple[int, int, float, float]:
    out: mp.Queue = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=client, args=(port, seconds, out)) for _ in range(clients)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(r[0] for r in results), sum(r[1] for r in results), time.process_time() - cpu0, time.monotonic() - wall0


def part1(seconds: float, clients: int) -> None:
    from ragtriage.collector import build_collector
    from ragtriage.config import Config

    sink = subprocess.Popen([sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True)
    sink_port = int(sink.stdout.readline())
    try:
        floor, floor_thread, floor_port = serve_in_thread(sink_app)
        sent, _, cpu, wall = run_load(floor_port, seconds, clients)
        floor.should_exit = True
        floor_thread.join()
        base = sent * 512 / cpu
        print(f"baseline (bare uvicorn, read body, 200): {sent * 512 / wall:,.0f} spans/s wall, {base:,.0f} per CPU-s")

        config = Config(sample_rate=0.1, write_back=False, collector_quiet_s=0.5, max_traces_in_flight=100_000)
        coll, _ = build_collector(config, forward=f"http://127.0.0.1:{sink_port}")
        server, thread, port = serve_in_thread(coll)
        sent, rejected, cpu, wall = run_load(port, seconds, clients)
        time.sleep(1.0)
        stats = coll.stats
        server.should_exit = True
        thread.join()
        spans = sent * 512
        print(
            f"collector, sample rate 0.1, free tiers, forwarding: {spans / wall:,.0f} spans/s wall, "
            f"{spans / cpu:,.0f} spans per CPU-s of this process ({spans / cpu / base:.2f}x the baseline)"
        )
        print(
            f"  requests {sent} ok, {rejected} answered 503; forwarded {stats.get('requests_forwarded', 0)}, "
            f"forward dropped {stats.get('forward_dropped', 0)}; traces sampled {stats.get('traces_sampled', 0)}, "
            f"evaluated {stats.get('evaluations_ok', 0)}, samples dropped {stats.get('samples_dropped_queue_full', 0)}"
        )
    finally:
        sink.terminate()


def memory_child(traces: int) -> None:
    from ragtriage.collector.assembly import TraceAssembler
    from ragtriage.collector.otlp import PROTOBUF, spans

    request = template()
    assembler = TraceAssembler(sample_rate=1.0, quiet_s=3600, ttl_s=3600, max_traces=traces)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(traces // TRACES_PER_REQUEST + 10):
        received = [s for s in spans(bodies(request), PROTOBUF, lambda _: True) if s.parent_span_id]  # no roots
        assembler.add(received, 0.0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"in_flight": assembler.in_flight, "dropped": assembler.counts["traces_dropped_buffer_full"],
                      "rss_mb": (rss1 - rss0) / 1024}))  # fmt: skip


def part2(traces: int) -> None:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(traces)], capture_output=True, text=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{data['in_flight']:,} traces in flight (3 spans each, two ~1 KB documents): +{data['rss_mb']:.0f} MB RSS "
        f"({data['rss_mb'] * 1024 * 1024 / data['in_flight']:,.0f} B/trace); {data['dropped']:,} more offered past "
        "max_traces_in_flight and not held"
    )


def part3(rounds: int) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from ragtriage.collector import build_collector
    from ragtriage.config import Config
    from ragtriage.testing.phoenix import PhoenixServer
    from tests.test_collector import exported_rag_trace

    with tempfile.TemporaryDirectory() as workdir, PhoenixServer(Path(workdir)) as phoenix:
        coll, _ = build_collector(Config(endpoint=phoenix.url, sample_rate=0.1, write_back=False))
        server, thread, port = serve_in_thread(coll)
        via = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        direct = OTLPSpanExporter(endpoint=f"{phoenix.url}/v1/traces")
        times: dict[str, list[float]] = {"direct to Phoenix": [], "through ragtriage collect": []}
        for _ in range(rounds):
            for name, exporter in (("direct to Phoenix", direct), ("through ragtriage collect", via)):
                spans = exported_rag_trace()
                t0 = time.perf_counter()
                exporter.export(spans)
                times[name].append((time.perf_counter() - t0) * 1000)
        asyncio.run(asyncio.sleep(1))
        server.should_exit = True
        thread.join()
        for name, values in times.items():
            q = statistics.quantiles(values, n=100)
            print(f"{name}: p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms ({len(values)} exports of one 2-span trace)")
        print(f"forwarded {coll.stats.get('requests_forwarded', 0)} of {coll.stats.get('requests_received', 0)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--no-phoenix", action="store_true")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        _, thread, port = serve_in_thread(sink_app)
        print(port, flush=True)
        thread.join()
        return
    if args.memory_child:
        memory_child(args.memory_child)
        return
    print("## part 1: throughput on one core")
    part1(args.seconds, args.clients)
    print("## part 2: memory")
    part2(args.traces)
    if not args.no_phoenix:
        print("## part 3: latency the collector adds")
        part3(args.rounds)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
