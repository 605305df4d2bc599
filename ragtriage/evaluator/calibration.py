"""Calibration files written by ``ragtriage calibrate``, read by the evaluator.

Here, next to the evaluator, so the core never imports the release-gate tooling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ragtriage.config import register_file_check
from ragtriage.evaluator.results import RAGEvaluationThresholds


@dataclass(frozen=True, slots=True)
class Calibration:
    """A loaded calibration file: ``RAGEvaluator(**calibration.evaluator_kwargs(), ...)``."""

    faithfulness: float | None
    confidence_threshold: float | None
    source: str

    def evaluator_kwargs(self, base: RAGEvaluationThresholds | None = None) -> dict[str, Any]:
        """``thresholds=`` (``base`` with the calibrated faithfulness) and ``confidence_threshold=``, each only
        when the file recommends it."""
        kwargs: dict[str, Any] = {}
        if self.faithfulness is not None:
            kwargs["thresholds"] = replace(base or RAGEvaluationThresholds(), faithfulness=self.faithfulness)
        if self.confidence_threshold is not None:
            kwargs["confidence_threshold"] = self.confidence_threshold
        return kwargs


def load_calibration(path: str | Path) -> Calibration:
    """Read a file written by ``ragtriage calibrate``; errors name the file and the bad field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        rec = data["recommended"]
        faith, conf = rec["thresholds"].get("faithfulness"), rec["confidence_threshold"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a ragtriage calibration file ({type(exc).__name__}: {exc})") from exc
    for name, value in (("faithfulness", faith), ("confidence_threshold", conf)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1):
            raise ValueError(f"{path}: recommended {name} must be a number in [0, 1], got {value!r}")
    return Calibration(faith, conf, str(path))


register_file_check("calibration_file", load_calibration)
