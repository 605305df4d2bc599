"""``ragtriage judge serve`` and ``ragtriage judge check`` against loopback servers scripted to misbehave."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from ragtriage.cli import app
from ragtriage.testing import JudgeServer, Reply, verdict_json

MODEL = "judge-8b"
VERDICT = verdict_json(documents=[{"index": 1, "relevance": 1.0}])


def well_behaved(body: dict[str, Any]) -> Reply:
    """Keeps to whatever schema it is given: the probe's ``{"ok": ...}`` or the judge's verdict."""
    schema_name = body.get("response_format", {}).get("json_schema", {}).get("name")
    probe = schema_name == "ragtriage_probe" or body.get("structured_outputs", {}).get("json", {}).get("required") == [
        "ok"
    ]
    return Reply('{"ok": true}' if probe else VERDICT)


def ignores_schemas(body: dict[str, Any]) -> Reply:
    probe = "about the sea" in body["messages"][-1]["content"]
    return Reply("The sea is calm today." if probe else VERDICT)


@pytest.fixture
def server() -> Iterator[JudgeServer]:
    with JudgeServer(default=well_behaved, models=[MODEL], max_model_len=16384) as s:
        yield s


def check(url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["judge", "check", url, "--model", MODEL, *args])


def test_serve_prints_the_command_the_judge_expects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTRIAGE_LOCAL_JUDGE_MODEL", "Qwen/Qwen2.5-7B-Instruct")
    result = CliRunner().invoke(app, ["judge", "serve", "--port", "8011", "--max-model-len", "16384"])
    assert result.exit_code == 0, result.output
    assert shlex.split(result.output) == [
        "vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "Qwen/Qwen2.5-7B-Instruct",
        "--max-model-len", "16384", "--enable-prefix-caching", "--port", "8011",
    ]  # fmt: skip


def test_serve_run_without_vllm_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(app, ["judge", "serve", "--run"])
    assert result.exit_code == 2 and "pip install 'ragtriage[vllm]'" in result.output


def test_serve_rejects_a_bad_port() -> None:
    result = CliRunner().invoke(app, ["judge", "serve", "--port", "70000"])
    assert result.exit_code == 2 and "port" in result.output


def test_check_passes_a_good_server(server: JudgeServer) -> None:
    result = check(server.url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok"]
    assert "max_model_len 16384" in lines[0] and "valid verdict" in lines[2]
    assert [r["model"] for r in server.requests] == [MODEL, MODEL]  # the probe, then one judge call


def test_check_names_the_served_models_when_the_name_is_wrong(server: JudgeServer) -> None:
    server.models = ["meta-llama/Llama-3.1-8B-Instruct"]
    result = check(server.url)
    assert result.exit_code == 1
    assert "model 'judge-8b' is not served here; the server serves 'meta-llama/Llama-3.1-8B-Instruct'" in result.output
    assert "--served-model-name judge-8b" in result.output
    assert server.requests == []  # stopped at the first failure


def test_check_spots_a_server_that_ignores_the_schema(server: JudgeServer) -> None:
    server.default = ignores_schemas
    result = check(server.url)
    assert result.exit_code == 1
    assert "FAIL  structured output: no structured outputs" in result.output
    assert "The sea is calm today." in result.output


def test_check_spots_a_server_that_refuses_the_schema(server: JudgeServer) -> None:
    server.default = Reply(status=400, body='{"object": "error", "message": "Unknown field: structured_outputs"}')
    result = check(server.url, "--structured-output", "vllm")
    assert result.exit_code == 1
    assert "refused a vllm request: HTTP 400: Unknown field: structured_outputs" in result.output
    assert "structured_output='json_schema'" in result.output


def test_check_spots_a_context_too_short_from_the_model_card(server: JudgeServer) -> None:
    server.max_model_len = 2048
    result = check(server.url)
    assert result.exit_code == 1
    assert "context too short: max_model_len is 2048 tokens" in result.output
    assert "--max-model-len 8192" in result.output


def test_check_spots_a_context_too_short_from_the_judge_call(server: JudgeServer) -> None:
    server.max_model_len = None  # not reported: the judge call finds out

    def short(body: dict[str, Any]) -> Reply:
        if "about the sea" in body["messages"][-1]["content"]:
            return well_behaved(body)
        message = "This model's maximum context length is 1024 tokens. However, you requested 1400 tokens."
        return Reply(status=400, body=json.dumps({"error": {"message": message, "type": "BadRequestError"}}))

    server.default = short
    result = check(server.url)
    assert result.exit_code == 1
    assert "no max_model_len reported" in result.output
    assert "FAIL  judge: context too short for a judge call" in result.output
    assert "maximum context length is 1024 tokens" in result.output


def test_check_an_unreachable_server() -> None:
    result = check("http://127.0.0.1:9/v1")
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:9/v1" in result.output
