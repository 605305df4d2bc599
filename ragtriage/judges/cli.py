"""``ragtriage judge serve`` and ``ragtriage judge check``: start and verify the local judge's vLLM server."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil

import typer

from ragtriage.config import Config
from ragtriage.judges.vllm import MIN_CONTEXT_TOKENS, check_server, serve_command

judge_app = typer.Typer(no_args_is_help=True, help="The local judge: its vLLM command line, and a check of a server.")


@judge_app.command("serve")
def serve(
    model: str | None = typer.Option(None, help="Model to serve (default: RAGTRIAGE_LOCAL_JUDGE_MODEL's value)."),
    served_model_name: str | None = typer.Option(None, help="Name the judge asks for (default: the model)."),
    port: int = typer.Option(8000, help="Port of the OpenAI-compatible server."),
    max_model_len: int = typer.Option(MIN_CONTEXT_TOKENS, help="Context length in tokens (prompt + reply)."),
    run: bool = typer.Option(False, "--run", help="Run it (needs vllm: pip install 'ragtriage[vllm]')."),
) -> None:
    """Print the ``vllm serve`` command the local judge expects, or run it with ``--run``.

    The model is served under the name the judge sends (``--served-model-name``), with a context long enough
    for a judge call and automatic prefix caching (the judge's instructions are the same bytes on every call).

    Example::

        $ ragtriage judge serve --port 8001
        vllm serve meta-llama/Llama-3.1-8B-Instruct --served-model-name meta-llama/Llama-3.1-8B-Instruct \\
            --max-model-len 8192 --enable-prefix-caching --port 8001
        $ ragtriage judge serve --run    # on the GPU machine
    """
    model = model or Config.from_env().local_judge_model
    try:
        argv = serve_command(model, served_model_name=served_model_name, port=port, max_model_len=max_model_len)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not run:
        typer.echo(shlex.join(argv))
        return
    vllm = shutil.which("vllm")
    if vllm is None:
        typer.echo(
            "error: vllm is not installed here: pip install 'ragtriage[vllm]' (on a machine with a GPU)", err=True
        )
        raise typer.Exit(2)
    os.execv(vllm, argv)


@judge_app.command("check")
def check(
    url: str = typer.Argument(..., help="The server's base URL, e.g. http://vllm:8000/v1."),
    model: str | None = typer.Option(None, help="Model the judge asks for (default: RAGTRIAGE_LOCAL_JUDGE_MODEL's)."),
    structured_output: str = typer.Option("json_schema", help="How the judge asks for its schema: json_schema, vllm."),
    min_context_tokens: int = typer.Option(MIN_CONTEXT_TOKENS, help="Context the judge needs, in tokens."),
    api_key: str | None = typer.Option(None, help="Bearer key, if the server was started with --api-key."),
) -> None:
    """Check a running judge server: ``/v1/models`` serves the model with a long enough context, the server keeps
    to a JSON schema, and one judge call gives a valid verdict. Exit status 1 at the first failed step.

    Example::

        $ ragtriage judge check http://127.0.0.1:8000/v1
        ok    models: serves 'meta-llama/Llama-3.1-8B-Instruct' (max_model_len 8192)
        ok    structured output: the server keeps to a JSON schema (json_schema)
        ok    judge: a judge call gave a valid verdict (faithfulness 1.00, 377 prompt tokens, 412 ms)
    """
    if structured_output not in ("json_schema", "vllm", "none"):
        raise typer.BadParameter(f"--structured-output must be json_schema, vllm or none, got {structured_output!r}")
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"URL must be an http(s) URL, got {url!r}")
    model = model or Config.from_env().local_judge_model
    findings = asyncio.run(
        check_server(
            url,
            model,
            structured_output=structured_output,  # type: ignore[arg-type]
            min_context_tokens=min_context_tokens,
            api_key=api_key,
        )
    )
    for finding in findings:
        typer.echo(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.step}: {finding.message}")
    if not all(f.ok for f in findings):
        raise typer.Exit(1)
