"""Judge-call CPU and cascade throughput through a loopback judge of latency L at concurrency C
(#19 goals: <= 1 ms of client CPU per judge call and <= 3x the raw-stream floor; cascade throughput
>= 0.9 x C/L at C = 8 and 32).

The scripted judge (``JudgeServer(default=Reply(verdict_json(), delay_s=L))``) runs in a child
process, so ``time.process_time()`` here counts only the client side. C workers in one asyncio
loop issue a fixed number of calls with ~2 KB-context samples (whose answers pass the
deterministic tier, ``cache=False``, so every evaluation makes one local-judge call). Workers start
L/C apart (as independent requests arrive); throughput is the steady-state rate, from the C-th
completion to the last. Phases, back to back at each C, per round:

- ``raw streams (floor)``: keep-alive POSTs of the very request ragtriage sends on bare asyncio
  streams, ``json.loads`` of the reply: the least a Python client can spend;
- ``bare AsyncOpenAI``: ``openai.AsyncOpenAI().chat.completions.create`` with that request (the
  SDK, for reference: what ``LLMJudge`` used before #19);
- ``LLMJudge.judge()``: one judge call, prompt building and validation included;
- ``ragtriage evaluate()``: the whole cascade (deterministic tier, then the local judge).

The judge server's sockets get TCP_NODELAY here (``--stock-server`` leaves them as
``JudgeServer`` makes them).

    python bench/cascade.py
    python bench/cascade.py --latency-ms 50 --concurrency 1 8 32 --seconds 1.0 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import openai
from _support import JudgeProcess, machine, make_samples

from ragtriage import DeterministicChecker, LLMJudge, RAGEvaluator


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


class RawStreams:
    """The floor: keep-alive POSTs on asyncio streams, the reply read by Content-Length and ``json.loads``."""

    def __init__(self, url: str, body: bytes) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.message = (
            b"POST %s/chat/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (parts.path.encode(), self.host.encode(), self.port, len(body))
        ) + body
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self, i: int) -> None:
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        writer.write(self.message)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        json.loads(await reader.readexactly(length))
        self.idle.append((reader, writer))

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def shared_prefix(samples: list) -> str:
    """How many prompt tokens two calls share from the start (what prefix caching can reuse), in o200k_base
    tokens (gpt-4o-mini's) when ``bpe-openai`` is installed (it ships the tables; tiktoken downloads them),
    else in characters. The prompt is read as the messages' contents in order, as chat templates lay them out."""
    judge = LLMJudge(model="bench-judge", base_url="http://127.0.0.1:1/v1")
    try:
        import bpe_openai

        encode, unit = bpe_openai.get_encoding("o200k_base").encode, "o200k tokens"
    except ImportError:
        encode, unit = list, "characters (pip install bpe-openai for tokens)"
    lines = []
    for claims in (False, True):
        prompts = [
            encode(
                "".join(m["content"] for m in judge.messages(s.question, s.answer, s.contexts, verify_claims=claims))
            )
            for s in samples[:2]
        ]
        shared = next((i for i, (a, b) in enumerate(zip(*prompts, strict=False)) if a != b), min(map(len, prompts)))
        system = len(encode(judge.messages("q", "a", ["c"], verify_claims=claims)[0]["content"]))
        lines.append(
            f"{'heavy (claims)' if claims else 'local'}: {shared} of {len(prompts[0])} {unit} shared "
            f"({shared / len(prompts[0]):.0%}; system prompt {system})"
        )
    return "prompt prefix shared by two calls: " + "; ".join(lines)


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
    print(shared_prefix(samples))
    kinds = ("floor", "sdk", "judge", "evaluate")
    labels = ("raw streams (floor)", "bare AsyncOpenAI", "LLMJudge.judge()", "ragtriage evaluate()")
    names = dict(zip(kinds, labels, strict=True))
    with JudgeProcess(delay_s=latency, nodelay=nodelay) as server:
        # The exact request ragtriage sends, built once, for the floor and the SDK baseline.
        proto = LLMJudge(model="bench-judge", base_url=server.url)
        s0 = samples[0]
        request = proto.request_body(
            proto.messages(s0.question, s0.answer, s0.contexts, verify_claims=False),
            verify_claims=False,
            temperature=0.0,
        )
        body = json.dumps(request).encode()
        print(f"request body: {len(body)} bytes")

        results: dict[tuple[str, int], list[Phase]] = {}
        for _ in range(rounds):
            for c in concurrency:
                n = max(4 * c, round(seconds * c / latency))
                raw = RawStreams(server.url, body)
                results.setdefault(("floor", c), []).append(
                    await run_phase(names["floor"], c, n, latency, raw.call, server)
                )
                raw.close()

                client = openai.AsyncOpenAI(base_url=server.url, api_key="EMPTY", max_retries=0, timeout=30.0)

                async def bare(i: int, client: openai.AsyncOpenAI = client) -> None:
                    await client.chat.completions.create(**request)

                results.setdefault(("sdk", c), []).append(await run_phase(names["sdk"], c, n, latency, bare, server))
                await client.close()

                judge = LLMJudge(model="bench-judge", base_url=server.url, max_concurrency=max(c, 8))

                async def one_call(i: int, judge: LLMJudge = judge) -> None:
                    s = samples[i % len(samples)]
                    await judge.judge(s.question, s.answer, s.contexts)

                results.setdefault(("judge", c), []).append(
                    await run_phase(names["judge"], c, n, latency, one_call, server)
                )
                await judge.aclose()

                judge = LLMJudge(model="bench-judge", base_url=server.url, max_concurrency=max(c, 8))
                evaluator = RAGEvaluator(local_judge=judge, sample_rate=1.0, cache=False)
                tiers: set[str | None] = set()

                async def evaluate(i: int, evaluator: RAGEvaluator = evaluator, tiers: set = tiers) -> None:
                    s = samples[i % len(samples)]
                    tiers.add((await evaluator.evaluate(s.question, s.answer, s.contexts)).tier)

                results.setdefault(("evaluate", c), []).append(
                    await run_phase(names["evaluate"], c, n, latency, evaluate, server)
                )
                assert tiers == {"local"}, tiers
                await evaluator.aclose()

    for c in concurrency:
        ideal = c / latency
        print(f"C={c}: ideal C/L = {ideal:.0f}/s")
        for kind in kinds:
            for phase in results[(kind, c)]:
                print(phase.line(ideal))

    def cpu(kind: str, c: int) -> float:
        return statistics.median(p.cpu_s / p.n for p in results[(kind, c)]) * 1000

    print(f"summary (medians over {rounds} rounds; ratios of phases run back to back):")
    for c in concurrency:
        floor = cpu("floor", c)
        ratios = [
            j.cpu_s / j.n / (f.cpu_s / f.n) for f, j in zip(results[("floor", c)], results[("judge", c)], strict=True)
        ]
        rate = statistics.median(p.rate for p in results[("evaluate", c)]) / (c / latency)
        print(
            f"  C={c:<3d} CPU/call: floor {floor:.3f} ms, SDK {cpu('sdk', c):.3f} ms, LLMJudge.judge() "
            f"{cpu('judge', c):.3f} ms = {statistics.median(ratios):.2f} x floor "
            f"[{min(ratios):.2f}..{max(ratios):.2f}], "
            f"evaluate() {cpu('evaluate', c):.3f} ms; cascade throughput {rate:.3f} x C/L"
        )
    for c in concurrency:
        judge_cpu, floor = cpu("judge", c), cpu("floor", c)
        rate = statistics.median(p.rate for p in results[("evaluate", c)]) / (c / latency)
        goals = [
            f"judge CPU <= 1 ms {'met' if judge_cpu <= 1 else 'NOT met'} ({judge_cpu:.3f})",
            f"<= 3 x floor {'met' if judge_cpu <= 3 * floor else 'NOT met'} ({judge_cpu / floor:.2f})",
        ]
        if c > 1:
            goals.append(f"cascade >= 0.9 x C/L {'met' if rate >= 0.9 else 'NOT met'} ({rate:.3f})")
        print(f"  goal C={c}: " + "; ".join(goals))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=1.0, help="ideal duration of each phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--stock-server", action="store_true", help="leave Nagle on in the judge server (adds ~40 ms a call)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.latency_ms, args.concurrency, args.seconds, args.rounds, not args.stock_server))
