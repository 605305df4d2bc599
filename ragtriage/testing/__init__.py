"""Test helpers: a scripted OpenAI-compatible judge server for loopback tests and benchmarks."""

from ragtriage.testing.calibration import Calibration, load_calibration
from ragtriage.testing.datasets import DatasetError, Item, load_dataset, write_dataset
from ragtriage.testing.judge_server import JudgeServer, Reply, verdict_json
from ragtriage.testing.synth import synthesize

__all__ = [
    "Calibration",
    "DatasetError",
    "Item",
    "JudgeServer",
    "Reply",
    "load_calibration",
    "load_dataset",
    "synthesize",
    "verdict_json",
    "write_dataset",
]
