"""Turn a judge's reply into a validated :class:`JudgeOutput`, or say precisely why not.

Models wrap JSON in code fences or prose; that is tolerated. What is not
tolerated is ambiguity: a reply with two candidate objects (say, one quoted
from an injected document and one of the judge's own) is an error, because
picking one would be guessing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from ragtriage.errors import JudgeOutputError
from ragtriage.judges.schema import JudgeOutput

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def extract_json_object(text: str) -> dict[str, Any]:
    text = text.strip()
    if not text:
        raise JudgeOutputError("empty reply")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        if isinstance(whole, dict):
            return whole
        raise JudgeOutputError(f"reply is JSON but a {type(whole).__name__}, not an object")
    chunks = [m.group(1) for m in _FENCE.finditer(text)] or [text]
    objects = [obj for chunk in chunks for obj in _top_level_objects(chunk)]
    if not objects:
        raise JudgeOutputError("no JSON object in reply")
    if len(objects) > 1:
        raise JudgeOutputError(f"reply holds {len(objects)} JSON objects; refusing to guess which is the verdict")
    return objects[0]


def _top_level_objects(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    start = text.find("{")
    while start >= 0:
        try:
            obj, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        start = text.find("{", end)
    return found


def parse_judge_output(text: str, *, n_contexts: int, verify_claims: bool) -> JudgeOutput:
    try:  # the common case, a bare valid object (structured outputs): one parse, straight into the model
        output = JudgeOutput.model_validate_json(text)
    except ValidationError:
        output = None
    if output is None or (verify_claims and "claims" not in output.model_fields_set):
        output = _parse_leniently(text, verify_claims=verify_claims)
    for doc in output.documents:
        if doc.index > n_contexts:
            raise JudgeOutputError(f"documents refers to context {doc.index}, but there are {n_contexts}")
    for i, claim in enumerate(output.claims, 1):
        if claim.context_index is not None and claim.context_index > n_contexts:
            raise JudgeOutputError(f"claim {i} cites context {claim.context_index}, but there are {n_contexts}")
        if claim.supported and claim.context_index is None:
            raise JudgeOutputError(f"claim {i} is marked supported but cites no context")
    return output


def _parse_leniently(text: str, *, verify_claims: bool) -> JudgeOutput:
    """Fences and prose around the object, and the precise reason when there is no valid one."""
    data = extract_json_object(text)
    if verify_claims and "claims" not in data:
        raise JudgeOutputError("claim verification was requested but the reply has no 'claims'")
    try:
        return JudgeOutput.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise JudgeOutputError(f"reply does not match the schema: {problems}") from None
