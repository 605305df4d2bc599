"""Redis Stream scale-out: worker throughput 1 vs 2 processes, and end-to-end lag, over loopback only.

    python bench/streams.py
    python bench/streams.py -n 800 --latency-ms 100 --concurrency 8 --rate 20 --seconds 10

Starts its own ``redis-server`` on a free loopback port (``--save '' --appendonly no``) and the
scripted judge (``JudgeServer(default=Reply(verdict_json(), delay_s=L))``) in a child process, and
stops both at the end. Nothing leaves 127.0.0.1 (Phoenix write-back is off; the Phoenix endpoint is
pointed at a closed loopback port and never contacted). Takes about a minute.

Part 1, throughput. One stream per phase is pre-filled with N samples (grounded answers that pass
the deterministic tier, so every one goes to the judge; unique questions and contexts, so no cache
hits). Then 1, resp. 2, ``python -m ragtriage.cli worker --queue URL --concurrency C`` processes
(``RAGTRIAGE_WRITE_BACK=false``, ``RAGTRIAGE_LOCAL_JUDGE_URL`` = the loopback judge) drain it. The
clock runs from spawning the worker(s) until ``XINFO GROUPS`` shows pending == 0 and lag == 0
(polled every 10 ms). Also shown: the same from the first consumed entry (excludes interpreter
start-up), the CPU each process used, and Redis commands per sample (``INFO commandstats``).
Ideal per worker: C / L samples/s.

Part 2, end-to-end lag. Producers ``XADD`` samples at a steady rate whose ``ended_at`` is stamped
right before the ``XADD`` (as ``RAGSample`` does when the span processor builds it). The workers run
in this process, ``StreamWorker(Pipeline(evaluator, on_result=cb), url)``, each in its own thread with
its own event loop; ``cb`` runs when the pipeline has the result (right before ``XACK``: one Redis round
trip earlier than up to session 3, when it ran right after) and records ``time.time() - sample.ended_at``.
Write-back is disabled: with write-back on, the result is written to Phoenix before ``cb`` and the ack,
so annotation time = this lag; a Phoenix server is not part of a loopback-only benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
from _support import JudgeProcess, RedisProcess, machine, make_samples, percentile

from ragtriage import LLMJudge, RAGEvaluator
from ragtriage.handoff.redis_stream import DEFAULT_GROUP, StreamWorker
from ragtriage.pipeline import Pipeline
from ragtriage.sample import STREAM_FIELD, Document, RAGSample

ROOT = Path(__file__).resolve().parent.parent
STREAM_COUNTERS = ("xreadgroup", "xautoclaim", "xgroup|create", "xack", "xpending", "xinfo|groups", "xadd")


def build_samples(n: int, tag: str, seed: int) -> list[RAGSample]:
    pool = [s for s in make_samples(n * 6 + 6, seed=seed) if s.kind == "grounded"][:n]
    assert len(pool) == n
    out = []
    for i, s in enumerate(pool):
        out.append(
            RAGSample(
                trace_id=(seed << 40) + i + 1,
                root_span_id=(seed << 20) + i + 1,
                question=f"{s.question} (request {tag}-{i})",
                answer=s.answer,
                documents=[Document(c, span_id=i * 8 + k + 1, position=k) for k, c in enumerate(s.contexts)],
            )
        )
    return out


def group_state(client: redis.Redis, stream: str) -> dict | None:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == DEFAULT_GROUP:
            return g
    return None


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_env(judge_url: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "OPENAI_API_KEY", "RAGTRIAGE_HEAVY_JUDGE_URL", "RAGTRIAGE_REDIS_URL", "RAGTRIAGE_SLACK_WEBHOOK_URL",
        "RAGTRIAGE_PAGERDUTY_ROUTING_KEY", "RAGTRIAGE_ALERT_RULES_FILE", "RAGTRIAGE_CALIBRATION_FILE",
        "PHOENIX_API_KEY",
    ):  # fmt: skip
        env.pop(name, None)
    env.update(
        RAGTRIAGE_WRITE_BACK="false",
        RAGTRIAGE_LOCAL_JUDGE_URL=judge_url,
        PHOENIX_COLLECTOR_ENDPOINT="http://127.0.0.1:9",  # never contacted with write-back off
        PHOENIX_PROJECT_NAME="bench-streams",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


# -- part 1: throughput of `ragtriage worker` processes ----------------------------------------------------


def throughput_phase(
    rds: RedisProcess, judge: JudgeProcess, workers: int, n: int, concurrency: int, timeout_s: float
) -> dict:
    stream = f"bench:tput:{workers}w"
    client = redis.Redis.from_url(rds.url)
    samples = build_samples(n, f"t{workers}", seed=100 + workers)
    pipe = client.pipeline(transaction=False)
    for s in samples:
        pipe.xadd(stream, {STREAM_FIELD: s.to_json()})
    pipe.execute()
    assert client.xlen(stream) == n
    client.config_resetstat()
    judge_cpu0 = judge.cpu_s()
    env = worker_env(judge.url)
    logs: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    errs = [tempfile.TemporaryFile() for _ in range(workers)]  # noqa: SIM115 - closed after the workers exit
    t_spawn = time.perf_counter()
    for k in range(workers):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ragtriage.cli",
                    "worker",
                    "--queue",
                    rds.url,
                    "--stream",
                    stream,
                    "--consumer",
                    f"w{workers}-{k}",
                    "--concurrency",
                    str(concurrency),
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=errs[k],  # a file, not a pipe: the worker logs a line per judge request (httpx INFO)
            )
        )
    t_first = t_done = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            g = group_state(client, stream)
            now = time.perf_counter()
            if g is not None:
                if t_first is None and (g["pending"] > 0 or (g.get("entries-read") or 0) > 0):
                    t_first = now
                if g["pending"] == 0 and g["lag"] == 0:
                    t_done = now
                    break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited early")
            time.sleep(0.01)
        cpu = [proc_cpu_s(p.pid) for p in procs]
        judge_cpu = judge.cpu_s() - judge_cpu0
        stats = commandstats(client)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for fh in errs:
            fh.seek(0)
            logs.append(fh.read().decode(errors="replace"))
            fh.close()
    if t_done is None or t_first is None:
        raise RuntimeError(
            f"{workers} worker(s) did not drain {n} samples in {timeout_s}s: {[x[-2000:] for x in logs]}"
        )
    acked = 0
    other: dict[str, int] = {}
    for err in logs:
        m = re.search(r"ragtriage worker stopped: (\{.*\})", err)
        if m:
            counts = eval(m.group(1), {"__builtins__": {}})  # a dict repr of str -> int, logged by cli.py
            acked += counts.get("acked", 0)
            for k, v in counts.items():
                if k != "acked":
                    other[k] = other.get(k, 0) + v
    client.delete(stream)
    client.close()
    wall = t_done - t_spawn
    active = t_done - t_first
    return {
        "workers": workers,
        "wall_s": wall,
        "active_s": active,
        "startup_s": t_first - t_spawn,
        "rate_wall": n / wall,
        "rate_active": n / active,
        "acked": acked,
        "other_counts": other,
        "worker_cpu_s": cpu,
        "judge_cpu_s": judge_cpu,
        "per_sample": {c: stats.get(c, 0) / n for c in STREAM_COUNTERS if stats.get(c)},
    }


# -- part 2: end-to-end lag with in-process StreamWorkers ----------------------------------------------------


class InProcessWorker:
    """A StreamWorker in its own thread and event loop; records lag when the result is ready (before the ack)."""

    def __init__(self, url: str, stream: str, judge_url: str, name: str, concurrency: int) -> None:
        self.lags: list[float] = []
        self.tiers: dict[str, int] = {}
        self._ready = threading.Event()
        self._args = (url, stream, judge_url, name, concurrency)
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.error: BaseException | None = None

    def _on_result(self, sample: RAGSample, result) -> None:
        self.lags.append(time.time() - sample.ended_at)
        self.tiers[result.tier] = self.tiers.get(result.tier, 0) + 1

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        url, stream, judge_url, name, concurrency = self._args
        evaluator = RAGEvaluator(local_judge=LLMJudge(model="bench-judge", base_url=judge_url), sample_rate=1.0)
        pipeline = Pipeline(evaluator, on_result=self._on_result)
        self.worker = StreamWorker(pipeline, url, stream=stream, consumer=name, concurrency=concurrency)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self.worker.run(self._stop)
        finally:
            await evaluator.aclose()

    def start(self) -> InProcessWorker:
        self._thread.start()
        self._ready.wait(30)
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self.error:
            raise self.error


def lag_phase(
    rds: RedisProcess, judge: JudgeProcess, workers: int, rate: float, seconds: float, concurrency: int
) -> dict:
    stream = f"bench:lag:{workers}w"
    client = redis.Redis.from_url(rds.url)
    n = int(rate * seconds)
    samples = build_samples(n, f"l{workers}", seed=200 + workers)
    client.xgroup_create(stream, DEFAULT_GROUP, id="0", mkstream=True)
    running = [
        InProcessWorker(rds.url, stream, judge.url, f"lag{workers}-{k}", concurrency).start() for k in range(workers)
    ]
    time.sleep(0.3)  # every worker blocked in XREADGROUP before the first sample
    late = []
    t0 = time.perf_counter()
    try:
        for i, s in enumerate(samples):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            late.append(max(0.0, -delay))
            s.ended_at = time.time()  # the trace ends now; the producer publishes it at once
            client.xadd(stream, {STREAM_FIELD: s.to_json()})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            g = group_state(client, stream)
            if g is not None and g["pending"] == 0 and g["lag"] == 0:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("lag phase did not drain")
    finally:
        for w in running:
            w.stop()
    lags = [x for w in running for x in w.lags]
    tiers: dict[str, int] = {}
    for w in running:
        for k, v in w.tiers.items():
            tiers[k] = tiers.get(k, 0) + v
    client.delete(stream)
    client.close()
    ms = [x * 1000 for x in lags]
    return {
        "workers": workers,
        "n": n,
        "acked": len(lags),
        "per_worker": [len(w.lags) for w in running],
        "tiers": tiers,
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "max": max(ms),
        "min": min(ms),
        "producer_late_max_ms": max(late) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=800, help="samples pre-filled for each throughput phase")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="judge latency L")
    parser.add_argument("--concurrency", type=int, default=8, help="C per worker")
    parser.add_argument("--rate", type=float, default=20.0, help="producer samples/s in the lag part")
    parser.add_argument("--seconds", type=float, default=10.0, help="producer duration in the lag part")
    args = parser.parse_args()
    L = args.latency_ms / 1000
    C = args.concurrency
    started = time.perf_counter()
    print(machine())
    print(f"judge latency L={args.latency_ms:.0f} ms, C={C} per worker, ideal per worker C/L = {C / L:.0f} samples/s")
    with RedisProcess() as rds, JudgeProcess(delay_s=L) as judge:
        print(f"redis-server {rds.url} (--save '' --appendonly no), judge {judge.url} (child process)")
        print(f"\n[1] throughput: N={args.n} pre-filled samples, `python -m ragtriage.cli worker` processes")
        results = {}
        for workers in (1, 2):
            r = throughput_phase(rds, judge, workers, args.n, C, timeout_s=120)
            results[workers] = r
            ideal = workers * C / L
            print(
                f"  {workers} worker(s): {r['rate_wall']:6.1f} samples/s from spawn ({r['wall_s']:.2f} s, "
                f"start-up {r['startup_s']:.2f} s); {r['rate_active']:6.1f} samples/s from first read "
                f"({r['active_s']:.2f} s); ideal {ideal:.0f}/s -> {r['rate_active'] / ideal:.0%} of ideal"
            )
            print(
                f"      acked {r['acked']}/{args.n} {r['other_counts'] or ''}; CPU s: workers "
                f"{', '.join(f'{c:.2f}' for c in r['worker_cpu_s'])}, judge {r['judge_cpu_s']:.2f} "
                f"(of {r['wall_s'] * (os.cpu_count() or 1):.1f} core-s available)"
            )
            print(f"      redis calls per sample: {json.dumps({k: round(v, 2) for k, v in r['per_sample'].items()})}")
        ratio_wall = results[2]["rate_wall"] / results[1]["rate_wall"]
        ratio_active = results[2]["rate_active"] / results[1]["rate_active"]
        print(
            f"  ratio 2/1 workers, from spawn      : {ratio_wall:.2f}x  "
            f"(goal >= 1.8x: {'met' if ratio_wall >= 1.8 else 'NOT met'})"
        )
        print(f"  ratio 2/1 workers, from first read : {ratio_active:.2f}x")

        print(
            f"\n[2] end-to-end lag (ended_at -> XACK), {args.rate:.0f} samples/s for {args.seconds:.0f} s, "
            "in-process StreamWorkers, write-back off"
        )
        for workers in (1, 2):
            r = lag_phase(rds, judge, workers, args.rate, args.seconds, C)
            print(
                f"  {workers} worker(s): p50 {r['p50']:.1f} ms  p95 {r['p95']:.1f} ms  max {r['max']:.1f} ms  "
                f"min {r['min']:.1f} ms  (acked {r['acked']}/{r['n']}, per worker {r['per_worker']}, "
                f"tiers {r['tiers']}, "
                f"producer late max {r['producer_late_max_ms']:.1f} ms)"
            )
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
