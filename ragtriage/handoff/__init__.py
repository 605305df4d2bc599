"""Hand-off: how a sample reaches its Pipeline. One module per transport, holding both of its ends:
``thread`` (a background thread in the app), ``child_process`` (an evaluator process on a pipe),
``redis_stream`` (a Redis Stream to ``ragtriage worker``\\ s); and the one bounded consumer they share."""
