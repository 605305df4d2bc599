"""``ragtriage demo``: a small instrumented RAG app over a bundled corpus, evaluated into Phoenix."""

from ragtriage.demo.app import DemoApp, load_corpus

__all__ = ["DemoApp", "load_corpus"]
