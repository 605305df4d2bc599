"""The child process of ``instrument(evaluate_in="process")``.

Reads ``<seq> <sample JSON>`` lines on stdin (and ``drops <dropped> <offered>``,
the app process's totals for the dropped-samples alert), evaluates and writes back each
sample with the same :class:`~ragtriage.pipeline.Pipeline` as the in-process path (built by
:func:`ragtriage.runtime.build`, role ``evaluator_process``), and answers ``<seq> <status>`` on stdout. Configuration
comes from the environment the parent set (``Config.to_env``). On EOF it
finishes what it holds and exits.

    python -m ragtriage.instrumentation.evaluator_process [--metrics-port N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import BinaryIO

from opentelemetry import context as otel_context

from ragtriage.config import Config
from ragtriage.errors import WriteBackFailed
from ragtriage.handoff.child_process import MAX_LINE_BYTES
from ragtriage.runtime import Runtime, build
from ragtriage.sample import RAGSample

logger = logging.getLogger("ragtriage.evaluator_process")
#: Replies are sent in batches: one wake-up of the app process's background thread per batch, not per sample
#: (a wake-up takes the GIL from the app's thread). 200 ms, like the parent's poll: a sample's slot is held
#: that much longer, and force_flush() in the app waits up to that much longer.
REPLY_DELAY_S = 0.2


async def serve(runtime: Runtime, concurrency: int, replies: BinaryIO) -> None:
    assert runtime.pipeline is not None
    pipeline, drops = runtime.pipeline, runtime.drops
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, replies)
    stdout = asyncio.StreamWriter(transport, protocol, None, loop)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    outbox: list[bytes] = []

    async def one(seq: bytes, payload: bytes) -> None:
        try:
            await pipeline(RAGSample.from_json(payload.decode("utf-8", "surrogatepass")))
            status = "ok"
        except ValueError as exc:
            logger.warning("malformed sample %s: %s", seq.decode("ascii", "replace"), exc)
            status = "malformed"
        except WriteBackFailed:
            status = "write_back_failed"  # counted and logged (rate-limited) by the pipeline
        except Exception:
            logger.exception("evaluation failed")
            status = "error"
        finally:
            slots.release()
        if not outbox:
            loop.call_later(REPLY_DELAY_S, send)
        outbox.append(seq + b" " + status.encode() + b"\n")

    def send() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # the parent is gone
            stdout.write(b"".join(outbox))
        outbox.clear()

    token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        while line := await stdin.readline():
            seq, _, payload = line.rstrip(b"\n").partition(b" ")
            if seq == b"drops":
                with contextlib.suppress(ValueError):
                    dropped, offered = map(int, payload.split())
                    drops.totals = (dropped, offered)
                continue
            await slots.acquire()
            task = loop.create_task(one(seq, payload))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        send()
        with contextlib.suppress(ConnectionError):
            await stdout.drain()
    finally:
        otel_context.detach(token)
        await runtime.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ragtriage.instrumentation.evaluator_process")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    args = parser.parse_args(argv)
    # Replies get the pipe that was stdout; stdout itself now goes to stderr, so a stray print() in
    # some library cannot garble the reply stream.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.WARNING, format="ragtriage evaluator process: %(levelname)s %(message)s")
    config = Config.from_env()
    runtime = build(config, "evaluator_process")
    if args.metrics_port is not None:
        runtime.start_metrics(port=args.metrics_port)
    asyncio.run(serve(runtime, config.max_concurrency, replies))


if __name__ == "__main__":
    main()
