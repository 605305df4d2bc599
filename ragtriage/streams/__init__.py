"""Scale-out: a Redis Stream of samples between app replicas and ``ragtriage worker`` consumers."""

from ragtriage.streams.queue import DEFAULT_GROUP, DEFAULT_STREAM, StreamPublisher, dead_letter_stream
from ragtriage.streams.shared_alerts import SharedAlerts
from ragtriage.streams.worker import StreamWorker

__all__ = ["DEFAULT_GROUP", "DEFAULT_STREAM", "SharedAlerts", "StreamPublisher", "StreamWorker", "dead_letter_stream"]
