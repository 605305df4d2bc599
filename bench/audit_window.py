"""What the fleet's audit window in Redis costs against a process's own window in memory.

Measured in one run, paired and interleaved round by round (CPU time, ``time.process_time``, of this process;
the redis-server's own CPU read from /proc):

- ``record``: one finished audit into the window (``await window.record(outcome)``): ``AgreementWindow``
  (memory) against ``RedisAgreementWindow`` on a real loopback redis-server (one Lua call per audit);
- ``snapshot``: one read of every tier's agreement (the alert rule, the metrics gauge, ``summary()``), each
  window holding 1,000 audits per tier;
- ``audit``: a sample end to end: ``evaluate()`` with a local and a heavy judge (a loopback judge in a
  child process, no delay), ``audit_rate=1.0``, and the audit it starts, with either window; the two
  evaluators take turns of 10 samples, after 20 samples each to warm up.

Ratios are Redis against memory in the same round; the median over rounds is printed.

    python bench/audit_window.py
    python bench/audit_window.py --n 2000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from _support import JudgeProcess, RedisProcess, machine, make_samples

from ragtriage import LLMJudge, RAGEvaluator
from ragtriage.evaluator.audit import AgreementWindow, AuditOutcome
from ragtriage.evaluator.fleet_audits import RedisAgreementWindow

OUTCOMES = [
    AuditOutcome(f"k{i}", "local" if i % 3 else "deterministic", "pass" if i % 3 else "fail", "heavy", verdict)  # type: ignore[arg-type]
    for i, verdict in enumerate(["pass", "fail", "pass", "pass", None, "fail", "pass"] * 3)
]


def server_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def record_us(window: AgreementWindow, n: int) -> float:
    start = time.process_time()
    for i in range(n):
        await window.record(OUTCOMES[i % len(OUTCOMES)])
    return (time.process_time() - start) / n * 1e6


def snapshot_us(window: AgreementWindow, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        window.snapshot()
    return (time.process_time() - start) / n * 1e6


async def audit_us(evaluators: list[RAGEvaluator], batch: list[tuple[str, str, list[str]]]) -> list[float]:
    """CPU per sample of each evaluator, run in turns of 10 samples (first one, then the other first)."""
    spent = [0.0] * len(evaluators)
    for turn, first in enumerate(range(0, len(batch), 10)):
        order = list(range(len(evaluators)))
        for k in order if turn % 2 == 0 else reversed(order):
            start = time.process_time()
            for question, answer, contexts in batch[first : first + 10]:
                await evaluators[k].evaluate(question, answer, contexts)
                await evaluators[k].drain_audits()  # one audit at a time: its whole cost lands in its sample's
            spent[k] += time.process_time() - start
    return [s / len(batch) * 1e6 for s in spent]


def evaluator(url: str, audits: AgreementWindow) -> RAGEvaluator:
    def judge(model: str) -> LLMJudge:
        return LLMJudge(model=model, base_url=url, max_retries=0, timeout_s=10)

    return RAGEvaluator(
        local_judge=judge("local"), heavy_judge=judge("heavy"), sample_rate=1.0, cache=False, audit_rate=1.0,
        audits=audits,
    )  # fmt: skip


async def main(n: int, rounds: int, samples_n: int) -> None:
    print(machine())
    samples = [(f"{s.question} (#{i})", s.answer, s.contexts) for i, s in enumerate(make_samples(samples_n + 20))]
    warm_up, batch = samples[:20], samples[20:]
    results: dict[str, list[float]] = {k: [] for k in ("record", "snapshot", "audit", "server")}
    raw: dict[str, list[tuple[float, float]]] = {k: [] for k in ("record", "snapshot", "audit")}
    audits: list[int] = []
    with RedisProcess() as redis, JudgeProcess(delay_s=0.0, claims=True) as judge:
        assert redis.proc is not None
        for r in range(rounds):
            memory = AgreementWindow()
            shared = RedisAgreementWindow(redis.url, project=f"bench-{uuid.uuid4().hex[:6]}")
            await shared.refresh()  # connect outside the measurement
            before = server_cpu_s(redis.proc.pid)
            pair = (await record_us(memory, n), await record_us(shared, n))
            server = (server_cpu_s(redis.proc.pid) - before) / n * 1e6
            raw["record"].append(pair)
            results["server"].append(server)
            # both windows now hold more than 1,000 audits per tier: a full window to read
            raw["snapshot"].append((snapshot_us(memory, n // 10), snapshot_us(shared, n // 10)))
            await shared.aclose()
            evaluators = [evaluator(judge.url, AgreementWindow())]
            evaluators.append(evaluator(judge.url, RedisAgreementWindow(redis.url, project=f"bench-{r}")))
            await audit_us(evaluators, warm_up)  # connections open, code paths warm
            warm_audits = evaluators[0].audits.counts["audits_ok"]
            memory_us, shared_us = await audit_us(evaluators, batch)
            raw["audit"].append((memory_us, shared_us))
            for e in evaluators:
                await e.aclose()
            # the same audits, every one a verdict, with either window; the Redis one never fell back to memory
            assert evaluators[0].audits.counts == evaluators[1].audits.counts
            assert set(evaluators[0].audits.counts) == {"audits_ok"}
            audits.append(evaluators[0].audits.counts["audits_ok"] - warm_audits)
    for key, pairs in raw.items():
        results[key] = [shared / memory for memory, shared in pairs]
    print(
        f"{n} audits recorded and {n // 10} snapshots per round; {len(batch)} samples evaluated per round, "
        f"{min(audits)}-{max(audits)} of them audited (the others: no decision to audit); {rounds} rounds"
    )
    for key, label in (
        ("record", "record one audit"),
        ("snapshot", "snapshot (1,000 audits per tier)"),
        ("audit", "a sample end to end, with its audit"),
    ):
        memory = statistics.median(m for m, _ in raw[key])
        shared = statistics.median(s for _, s in raw[key])
        ratio = statistics.median(results[key])
        spread = f"[{min(results[key]):.2f}..{max(results[key]):.2f}]"
        print(f"{label:36s} memory {memory:8.1f} us  redis {shared:8.1f} us  ratio {ratio:6.2f}x {spread}")
    print(f"{'redis-server CPU per recorded audit':36s} {statistics.median(results['server']):.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="audits recorded per window per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200, help="samples evaluated per evaluator per round")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.samples))
