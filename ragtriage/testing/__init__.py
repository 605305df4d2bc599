"""Test doubles you may use in your own tests: a scripted OpenAI-compatible judge server, real Phoenix and
redis-server runners. Nothing of the product lives here (the release gate is :mod:`ragtriage.gate`)."""

from ragtriage.testing.judge_server import JudgeServer, Reply, verdict_json

__all__ = ["JudgeServer", "Reply", "verdict_json"]
