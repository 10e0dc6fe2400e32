"""The account service: ``create_app(settings)`` and everything its lifespan owns.

    app          create_app(settings): the lifespan opens and closes every resource
    http/        the HTTP edge: admission, body limits, proxies, problems, health, metrics
    accounts/    one module per resource, routes and SQL side by side
    identity/    password hashing, sessions and their cache, that the account routes use
    downstreams  the overview's downstream services (loyalty, shipments) as one resource
    jobs/        durable jobs on PostgreSQL: outbox, worker, email
    db           the asyncpg pool as a resource, and the embedded PostgreSQL
    listener     LISTEN on a connection of its own, reconnecting
    deps         typed dependencies that routes declare by annotation
    state        what the lifespan hands to every request
    settings     LOOPWISE_* settings, validated at start-up
    migrate      Alembic migrations (migrations/), under an advisory lock
    logs         structured logs through a non-blocking line writer (logwriter)
    priority     how much CPU a background thread may take from the event loop
    exceptions   the service's errors, each mapped to one HTTP status

Imports flow one way: ``http`` and the features use the infrastructure; ``app`` composes
them all.
"""
