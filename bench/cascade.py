"""Cascade throughput through a loopback judge of latency L at concurrency C
(goals: throughput >= 0.9 x C/L, ragtriage CPU <= 1 ms per evaluation).

The scripted judge (``JudgeServer(default=Reply(verdict_json(), delay_s=L))``) runs in a child
process, so ``time.process_time()`` here counts only the client side. C workers in one asyncio
loop issue a fixed number of evaluations of ~2 KB-context samples whose answers pass the
deterministic tier, with ``cache=False``, so every evaluation makes one local-judge call. Workers
start L/C apart (as independent requests arrive); throughput is the steady-state rate, from the
C-th completion to the last. The
baseline in the same run is the bare client: ``openai.AsyncOpenAI().chat.completions.create`` with
the very request ragtriage sends (built once, up front) to the same server at the same C. Phases
alternate baseline / ragtriage. Reported: throughput / (C/L), mean call latency (C / throughput), client
CPU per call, and ragtriage's extra CPU over the bare client; then, because that difference of two
~4 ms numbers is noisy, ragtriage's own CPU measured directly: ``evaluate()`` through ``LLMJudge``
with only the SDK call replaced by a prebuilt reply (no I/O). The judge is built with
``max_concurrency=C``; one extra phase shows the default (16) at the highest C.

The judge server's sockets get TCP_NODELAY here (``--stock-server`` leaves them as
``JudgeServer`` makes them: it writes headers and body in two sends, and Nagle + delayed ACK then
add ~40 ms to every call on Linux loopback).

    python bench/cascade.py
    python bench/cascade.py --latency-ms 50 --concurrency 8 32 --seconds 1.5 --rounds 4
    python bench/cascade.py --stock-server --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace

import openai
from _support import JudgeProcess, machine, make_samples

from ragtriage import DeterministicChecker, LLMJudge, RAGEvaluator
from ragtriage.judges.prompts import build_messages
from ragtriage.judges.schema import output_json_schema


@dataclass
class Phase:
    name: str
    c: int
    n: int
    wall_s: float
    rate: float  # steady state: completions after the C-th, over the time they took
    cpu_s: float
    server_cpu_s: float

    def line(self, ideal: float) -> str:
        rate = self.rate
        return (
            f"  {self.name:28s} C={self.c:<3d} n={self.n:<5d} {rate:6.1f}/s = {rate / ideal:5.3f} x C/L  "
            f"call {self.c / rate * 1000:5.1f} ms  client CPU {self.cpu_s / self.n * 1000:5.3f} ms/call "
            f"({self.cpu_s / self.wall_s:4.0%} of a core)  "
            f"judge server CPU {self.server_cpu_s / self.n * 1000:.3f} ms/call"
        )


async def run_phase(
    name: str, c: int, n: int, latency: float, call: Callable[[int], Awaitable[None]], server: JudgeProcess
) -> Phase:
    # warm-up: open the connections, fill the pools
    await asyncio.gather(*(call(i) for i in range(2 * c)))
    issued = 0
    done: list[float] = []

    async def worker(k: int) -> None:
        # Staggered starts (L/C apart), as independent requests arrive; started together, C workers
        # against a constant-latency server stay in lock-step waves and queue on the client's CPU.
        await asyncio.sleep(k * latency / c)
        nonlocal issued
        while issued < n:
            i = issued
            issued += 1
            await call(i)
            done.append(time.perf_counter())

    server_cpu = server.cpu_s()
    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(c)))
    wall = time.perf_counter() - started
    rate = (n - c) / (done[-1] - done[c - 1])  # skips the ramp-up (the first C completions)
    return Phase(name, c, n, wall, rate, time.process_time() - cpu, server.cpu_s() - server_cpu)


class _InstantClient:
    """Stands in for ``AsyncOpenAI``: ``chat.completions.create`` returns one prebuilt reply, no I/O."""

    def __init__(self, completion: object) -> None:
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))
        self._completion = completion

    async def _create(self, **request: object) -> object:
        return self._completion

    async def close(self) -> None:
        pass


async def own_cpu(samples: list, completion: object, base_url: str, n: int) -> tuple[float, float] | None:
    """ragtriage's own CPU per evaluation, measured directly: ``evaluate()`` through ``LLMJudge`` with only
    the SDK call swapped for a prebuilt reply (sequential, no I/O). Also the deterministic check alone.
    Uses ``LLMJudge._per_loop`` (internal); returns None if that moved."""
    judge = LLMJudge(model="bench-judge", base_url=base_url)
    if not hasattr(judge, "_per_loop"):
        return None
    _, semaphore = judge._client()
    judge._per_loop[asyncio.get_running_loop()] = (_InstantClient(completion), semaphore)
    evaluator = RAGEvaluator(local_judge=judge, sample_rate=1.0, cache=False)
    checker = DeterministicChecker()
    for s in samples[:20]:
        assert (await evaluator.evaluate(s.question, s.answer, s.contexts)).tier == "local"
    runs, checks = [], []
    for _ in range(3):
        cpu = time.process_time()
        for i in range(n):
            s = samples[i % len(samples)]
            await evaluator.evaluate(s.question, s.answer, s.contexts)
        runs.append((time.process_time() - cpu) / n * 1000)
        cpu = time.process_time()
        for i in range(n):
            s = samples[i % len(samples)]
            checker.check(s.question, s.answer, s.contexts)
        checks.append((time.process_time() - cpu) / n * 1000)
    return statistics.median(runs), statistics.median(checks)


async def main(latency_ms: float, concurrency: list[int], seconds: float, rounds: int, nodelay: bool) -> None:
    checker = DeterministicChecker()
    samples = [
        s
        for s in make_samples(120)
        if s.kind in ("grounded", "paraphrase") and not checker.check(s.question, s.answer, s.contexts).decided_fail
    ]
    latency = latency_ms / 1000
    print(machine())
    print(
        f"judge latency L={latency_ms:g} ms; {len(samples)} distinct samples that pass the deterministic tier; "
        f"~{seconds:g} s of ideal traffic per phase; {rounds} round(s)"
    )
    print(f"judge server: {'TCP_NODELAY set by the benchmark' if nodelay else 'stock JudgeServer (Nagle on)'}")
    with JudgeProcess(delay_s=latency, nodelay=nodelay) as server:
        # The exact request ragtriage sends, built once, for the bare-client baseline.
        proto = LLMJudge(model="bench-judge", base_url=server.url)
        s0 = samples[0]
        keys = list(output_json_schema(verify_claims=False)["properties"])
        request = proto._request(
            build_messages(s0.question, s0.answer, s0.contexts, verify_claims=False, keys=keys),
            verify_claims=False,
            temperature=0.0,
        )
        print(f"request body: ~{sum(len(m['content']) for m in request['messages'])} characters of messages")
        client = openai.AsyncOpenAI(base_url=server.url, api_key="EMPTY", max_retries=0, timeout=30.0)
        direct = await own_cpu(samples, await client.chat.completions.create(**request), server.url, 1000)
        await client.close()

        results: dict[tuple[str, int], list[Phase]] = {}
        for _ in range(rounds):
            for c in concurrency:
                n = max(4 * c, round(seconds * c / latency))
                client = openai.AsyncOpenAI(base_url=server.url, api_key="EMPTY", max_retries=0, timeout=30.0)

                async def bare(i: int, client: openai.AsyncOpenAI = client) -> None:
                    await client.chat.completions.create(**request)

                phase = await run_phase("bare AsyncOpenAI", c, n, latency, bare, server)
                results.setdefault(("bare", c), []).append(phase)
                await client.close()

                judge = LLMJudge(model="bench-judge", base_url=server.url, max_concurrency=c)
                evaluator = RAGEvaluator(local_judge=judge, sample_rate=1.0, cache=False)
                tiers: set[str | None] = set()

                async def evaluate(i: int, evaluator: RAGEvaluator = evaluator, tiers: set = tiers) -> None:
                    s = samples[i % len(samples)]
                    tiers.add((await evaluator.evaluate(s.question, s.answer, s.contexts)).tier)

                results.setdefault(("ragtriage", c), []).append(
                    await run_phase("ragtriage evaluate()", c, n, latency, evaluate, server)
                )
                assert tiers == {"local"}, tiers
                await evaluator.aclose()

        c = max(concurrency)
        if c > 16:
            n = max(4 * c, round(seconds * c / latency))
            judge = LLMJudge(model="bench-judge", base_url=server.url)  # default max_concurrency=16
            evaluator = RAGEvaluator(local_judge=judge, sample_rate=1.0, cache=False)

            async def default_cap(i: int) -> None:
                s = samples[i % len(samples)]
                await evaluator.evaluate(s.question, s.answer, s.contexts)

            default_phase = await run_phase("ragtriage, max_concurrency=16", c, n, latency, default_cap, server)
            await evaluator.aclose()
        else:
            default_phase = None

    summary = []
    for c in concurrency:
        ideal = c / latency
        print(f"C={c}: ideal C/L = {ideal:.0f}/s")
        for kind in ("bare", "ragtriage"):
            for phase in results[(kind, c)]:
                print(phase.line(ideal))
        pairs = list(zip(results[("bare", c)], results[("ragtriage", c)], strict=True))  # measured back to back
        bare_rate = statistics.median(b.rate for b, _ in pairs)
        rt_rate = statistics.median(r.rate for _, r in pairs)
        rel = [r.rate / b.rate for b, r in pairs]
        bare_cpu = statistics.median(b.cpu_s / b.n for b, _ in pairs) * 1000
        rt_cpu = statistics.median(r.cpu_s / r.n for _, r in pairs) * 1000
        own = [(r.cpu_s / r.n - b.cpu_s / b.n) * 1000 for b, r in pairs]
        summary.append((c, rt_rate / ideal, bare_rate / ideal, rel, rt_cpu, bare_cpu, own))
    if default_phase is not None:
        print("default judge concurrency cap:")
        print(default_phase.line(default_phase.c / latency))

    print(f"summary (medians over {rounds} rounds; [min..max] of the back-to-back pairs):")
    for c, rt_ratio, bare_ratio, rel, rt_cpu, bare_cpu, own in summary:
        print(
            f"  C={c:<3d} throughput/(C/L): ragtriage {rt_ratio:.3f}, bare client {bare_ratio:.3f}; "
            f"ragtriage/bare {statistics.median(rel):.3f} [{min(rel):.3f}..{max(rel):.3f}]"
        )
        print(
            f"        CPU/call: ragtriage {rt_cpu:.3f} ms, bare client {bare_cpu:.3f} ms; ragtriage's own "
            f"{statistics.median(own):.3f} ms [{min(own):.3f}..{max(own):.3f}]"
        )
    if direct is not None:
        print(
            f"  ragtriage's own CPU, direct (evaluate() with the SDK call replaced by a prebuilt reply): "
            f"{direct[0]:.3f} ms/eval, of which DeterministicChecker.check {direct[1]:.3f} ms "
            f"({direct[1] / direct[0]:.0%})"
        )
    for c, rt_ratio, _, _, rt_cpu, _, own in summary:
        mine = direct[0] if direct is not None else statistics.median(own)
        print(
            f"  goal C={c}: throughput >= 0.9 x C/L {'met' if rt_ratio >= 0.9 else 'NOT met'} ({rt_ratio:.3f}); "
            f"ragtriage CPU <= 1 ms/eval {'met' if mine <= 1 else 'NOT met'} for ragtriage's own code "
            f"({mine:.3f} ms), {'met' if rt_cpu <= 1 else 'NOT met'} counting the OpenAI SDK ({rt_cpu:.3f} ms)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=1.5, help="ideal duration of each phase")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--stock-server", action="store_true", help="leave Nagle on in the judge server (adds ~40 ms a call)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.latency_ms, args.concurrency, args.seconds, args.rounds, not args.stock_server))
