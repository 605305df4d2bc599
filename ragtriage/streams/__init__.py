"""Scale-out: a Redis Stream of samples between app replicas and ``ragtriage worker`` consumers."""

from ragtriage.streams.worker import DEFAULT_GROUP, StreamWorker, dead_letter_stream

__all__ = ["DEFAULT_GROUP", "StreamWorker", "dead_letter_stream"]
