"""The entry point of the child process of ``instrument(evaluate_in="process")``.

It builds the pipeline with :func:`ragtriage.runtime.build` (role ``evaluator_process``) from the
environment the parent set (``Config.to_env``) and runs the child's end of the pipe,
:func:`ragtriage.handoff.child_process.serve`: ``<seq> <sample JSON>`` lines on stdin (and
``drops <dropped> <offered>``, the app process's totals for the dropped-samples alert), ``<seq> <status>``
on stdout. On EOF it finishes what it holds and exits.

    python -m ragtriage.instrumentation.evaluator_process [--metrics-port N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import BinaryIO

from ragtriage.config import Config
from ragtriage.handoff.child_process import serve
from ragtriage.runtime import Runtime, build


async def run(runtime: Runtime, replies: BinaryIO) -> None:
    """Serve the pipe until EOF, then finish the alerts and close connections."""
    assert runtime.pipeline is not None

    def record_drops(dropped: int, offered: int) -> None:  # the app's totals, for the dropped-samples rule
        runtime.drops.totals = (dropped, offered)

    try:
        await serve(runtime.pipeline, runtime.config.max_concurrency, replies, on_drops=record_drops)
    finally:
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
    runtime = build(Config.from_env(), "evaluator_process")
    if args.metrics_port is not None:
        runtime.start_metrics(port=args.metrics_port)
    asyncio.run(run(runtime, replies))


if __name__ == "__main__":
    main()
