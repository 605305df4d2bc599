"""Orchestrates ``ragtriage demo``: Phoenix, the instrumented app, the summary."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from contextlib import ExitStack

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from rich.console import Console
from rich.progress import track
from rich.table import Table

import ragtriage
from ragtriage.config import Config
from ragtriage.demo.app import DemoApp, load_corpus
from ragtriage.evaluator.results import RAGEvaluationResult
from ragtriage.export.phoenix import base_url
from ragtriage.instrumentation import installed_processor, installed_runtime
from ragtriage.judges import LLMJudge
from ragtriage.sample import RAGSample

PROJECT = "ragtriage-demo"


def run_demo(*, keep_running: bool, use_phoenix: bool, console: Console) -> int:
    documents, items = load_corpus()
    results: list[tuple[RAGSample, RAGEvaluationResult]] = []
    with ExitStack() as stack:
        endpoint = Config.from_env().endpoint if Config.in_env("endpoint") else None
        own_phoenix = use_phoenix and not endpoint  # started here, stopped when the demo ends
        if own_phoenix:
            try:
                from ragtriage.testing.phoenix import PhoenixServer
            except ImportError:  # pragma: no cover - depends on the install
                console.print("[red]Phoenix is not installed: pip install 'ragtriage[phoenix]' (or --no-phoenix)")
                return 2
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ragtriage-demo-"))
            with console.status("Starting Phoenix (about 20 s)..."):
                phoenix = stack.enter_context(PhoenixServer(workdir))
            endpoint = phoenix.url
        provider = TracerProvider(resource=Resource.create({"openinference.project.name": PROJECT}))
        if use_phoenix:
            assert endpoint is not None
            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=base_url(endpoint) + "/v1/traces"))
            )
        ragtriage.instrument(
            tracer_provider=provider,
            endpoint=endpoint,
            sample_rate=1.0,
            project_name=PROJECT,
            write_back=use_phoenix,
            auto_instrument=False,
            set_global=False,
            evaluate_in="thread",  # the summary below reads the results in this process
            on_result=lambda sample, result: results.append((sample, result)),
        )
        processor, runtime = installed_processor(), installed_runtime()
        assert processor is not None and runtime is not None and runtime.evaluator is not None
        evaluator = runtime.evaluator
        judges = [
            f"{name}: {judge.model if isinstance(judge, LLMJudge) else judge.fingerprint}"
            for name, judge in (("local", evaluator.local_judge), ("heavy", evaluator.heavy_judge))
            if judge is not None
        ]
        console.print(f"Judges: {', '.join(judges) or 'none configured: the free tiers (deterministic + grounding)'}")

        app = DemoApp(provider.get_tracer("ragtriage-demo-app"), documents)
        labels = {}
        for item in track(items, description="Answering questions", console=console):
            labels[item.question + item.answer] = item.label
            app.answer(item)
        with console.status("Evaluating in the background and writing back..."):
            provider.force_flush(120_000)
        _print_summary(console, results, labels, processor.stats)
        if use_phoenix and (keep_running or not own_phoenix):
            assert endpoint is not None  # from the environment, or the demo's own Phoenix
            console.print(
                f"\nOpen [bold]{base_url(endpoint)}[/bold], project [bold]{PROJECT}[/bold]: every trace carries "
                "its verdict (answer), its tier, the scores an LLM judge gave, and an EVALUATOR span."
            )
        elif use_phoenix:  # a link now would be dead by the time it is clicked
            console.print(
                "\nThe demo's Phoenix stops with it. To look at the scored traces, run [bold]ragtriage demo "
                "--keep-running[/bold], or send them to your own Phoenix with PHOENIX_COLLECTOR_ENDPOINT."
            )
        ragtriage.uninstrument()
        provider.shutdown()
        if keep_running and use_phoenix:
            console.print("Phoenix keeps running; press Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


def _print_summary(
    console: Console, results: list[tuple[RAGSample, RAGEvaluationResult]], labels: dict[str, str], stats: dict
) -> None:
    by_tier = Counter((r.tier or r.status, r.verdict) for _, r in results)
    table = Table(title=f"{len(results)} traces evaluated")
    table.add_column("tier")
    for verdict in ("pass", "fail", "uncertain"):
        table.add_column(verdict, justify="right")
    for tier in sorted({t for t, _ in by_tier}):
        table.add_row(tier, *(str(by_tier.get((tier, v), 0)) for v in ("pass", "fail", "uncertain")))
    console.print(table)

    truth = Table(title="verdict vs. the corpus's labels")
    truth.add_column("label")
    for verdict in ("pass", "fail", "uncertain"):
        truth.add_column(verdict, justify="right")
    confusion = Counter((labels.get(s.question + s.answer, "?"), r.verdict) for s, r in results)
    for label in ("faithful", "hallucinated"):
        truth.add_row(label, *(str(confusion.get((label, v), 0)) for v in ("pass", "fail", "uncertain")))
    console.print(truth)
    cost = sum(r.eval_cost_usd for _, r in results)
    console.print(
        f"cost ${cost:.4f}; dropped {stats.get('samples_dropped_queue_full', 0)}; "
        f"write-back failures {stats.get('write_back_failed', 0)}"
    )
    undecided = sum(1 for _, r in results if r.tier == "deterministic" and r.verdict == "uncertain")
    if undecided:
        console.print(
            f"{undecided} of {len(results)} answers would have been settled by an LLM judge (the free tiers only "
            "prove fails); add one in one line: RAGTRIAGE_LOCAL_JUDGE_URL=http://localhost:8000/v1 (vLLM) or "
            "OPENAI_API_KEY=sk-..."
        )
