"""``ragtriage worker``: the entry point of the Redis Stream's consuming end (:mod:`ragtriage.handoff.redis_stream`)."""
