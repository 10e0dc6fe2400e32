"""Who a caller is: the account service's identity resources, beneath its routes.

    passwords      argon2id off the event loop (a lifespan resource)
    sessions       opaque bearer tokens, one-query authentication
    session_cache  callers by token in memory, forgotten when PostgreSQL announces a change
    preferences_cache  each caller's preferences document in memory, under the same rule

A package of its own, below ``accounts``, ``deps`` and ``state``: the lifespan state and
the typed dependencies hand these to the account routes, so they cannot live among them
without a package cycle.
"""
