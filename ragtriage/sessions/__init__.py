"""Session scores: traces sharing a ``session.id`` judged as one conversation once it goes idle."""

from ragtriage.sessions.scorer import SessionScore, SessionScorer, SessionWriter
from ragtriage.sessions.store import MemorySessionStore, RedisSessionStore, SessionStore

__all__ = ["MemorySessionStore", "RedisSessionStore", "SessionScore", "SessionScorer", "SessionStore", "SessionWriter"]
