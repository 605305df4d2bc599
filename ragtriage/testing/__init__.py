"""Test helpers: a scripted OpenAI-compatible judge server for loopback tests and benchmarks."""

from ragtriage.testing.judge_server import JudgeServer, Reply, verdict_json

__all__ = ["JudgeServer", "Reply", "verdict_json"]
