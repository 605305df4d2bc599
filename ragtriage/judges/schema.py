"""The judge's output contract: a JSON schema sent to the server, validated again here."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Score = Annotated[float, Field(ge=0.0, le=1.0)]


class DocumentRelevance(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    index: Annotated[int, Field(ge=1)]
    relevance: Score


class Claim(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    claim: Annotated[str, Field(min_length=1)]
    supported: bool
    context_index: Annotated[int, Field(ge=1)] | None


class JudgeOutput(BaseModel):
    """Scores in [0, 1]; strict types, so ``"0.9"`` or ``true`` where a number belongs is an error."""

    model_config = ConfigDict(strict=True, frozen=True)

    faithfulness: Score
    relevance: Score
    answer_quality: Score
    context_recall: Score
    context_precision: Score
    confidence: Score
    reasons: str
    documents: list[DocumentRelevance]
    claims: list[Claim] = Field(default_factory=list)


_SCORE = {"type": "number", "minimum": 0, "maximum": 1}
_SCORES = ("faithfulness", "relevance", "answer_quality", "context_recall", "context_precision", "confidence")


def output_json_schema(*, verify_claims: bool) -> dict[str, Any]:
    """Written out by hand so it stays inside OpenAI's strict subset (every key required, no defaults)."""
    properties: dict[str, Any] = {name: dict(_SCORE) for name in _SCORES}
    properties["reasons"] = {"type": "string"}
    properties["documents"] = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"index": {"type": "integer", "minimum": 1}, "relevance": dict(_SCORE)},
            "required": ["index", "relevance"],
            "additionalProperties": False,
        },
    }
    if verify_claims:
        properties["claims"] = {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "claim": {"type": "string"},
                    "supported": {"type": "boolean"},
                    "context_index": {"type": ["integer", "null"]},
                },
                "required": ["claim", "supported", "context_index"],
                "additionalProperties": False,
            },
        }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def ask_for_schema(request: dict[str, Any], structured_output: str, name: str, schema: dict[str, Any]) -> bool:
    """Add to ``request`` the field by which the server keeps its output to ``schema``: OpenAI's strict
    ``response_format`` or vLLM's ``structured_outputs``. False for ``"none"``: the prompt alone asks for it."""
    if structured_output == "json_schema":
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        }
    elif structured_output == "vllm":
        request["structured_outputs"] = {"json": schema}
    else:
        return False
    return True
