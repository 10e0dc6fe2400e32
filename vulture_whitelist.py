"""Names vulture reports as unused that something outside Python's call graph reads.

Each line says who reads the name. ``./scripts/check`` runs vulture over ``src/`` and
``bench/src/`` with this file; a name that is really dead is deleted, not listed here.
"""

from typing import Any

_: Any = None

# Pydantic models: FastAPI serialises every field into the response body.
_.access_token  # auth.Token
_.token_type  # auth.Token
_.total_cents  # orders.Order
_.profile  # overview.Overview
_.language  # preferences.Preferences
_.theme  # preferences.Preferences
_.marketing_emails  # preferences.Preferences
_.order_updates  # preferences.Preferences
_.page_size  # preferences.Preferences
_.schema_revision  # health.Ready and state.AppState (read by /readyz through the TypedDict)
_.msg  # problems.FieldError: each validation error's message in the problem body

# Snapshots read by attribute name (getattr) when metrics refresh, or logged whole.
_.hits  # SessionCacheStats: the loopwise_session_cache_* counters, by name
_.misses
_.invalidations
_.retried  # WorkerStats: the loopwise_jobs_* counters, by name; logged at worker stop
_.lost_leases  # WorkerStats: logged at worker stop
_.released  # WorkerStats: logged at worker stop
_.job_worker  # AppState: the lifespan hands it to requests (tests read it)

# Accounts and jobs: read by SQL or the database, not by Python.
_.role  # sessions.Caller: users.role, returned by GET /users/me
_.DONE  # jobs.JobState: a state the SQL sets; counted per state by /metrics

# Alembic reads these module attributes of every revision.
_.down_revision
_.branch_labels
_.depends_on

# aiosmtpd calls handler methods by name; its signature fixes the arguments.
_.handle_DATA  # bench smtp_sink
_.envelope
_.session

# The benchmark's records: written into report.json whole (dataclasses.asdict).
_.health_max_ms
_.order_items
_.tags
_.flat

# The toolkit's public snapshots (loopwise.patterns): fields for its users to read.
_.window_calls  # BreakerStats
_.window_failures
_.times_opened
_.expired  # Deadline.expired
_.balance  # RetryBudgetStats
_.stalled  # LagStats
_.__class__  # cancel_safe: swaps httpcore's pool class on purpose
_._assign_requests_to_connections  # cancel_safe: httpcore's pool calls its override

# accounts.operators.UserState: `loopwise users show` prints every field (dataclasses.fields).
_.email_verified_at
_.live_sessions
_.failed_logins
_.pending_jobs

# logging.LogRecord: the formatter reads exc_text (outages.py clears it with exc_info).
_.exc_text

# OpenTelemetry's TracerProvider.get_tracer signature, which tracing._CurrentProvider keeps
# so the API's get_tracer can call it; the switch names tracers by module only.
_.instrumenting_library_version
_.schema_url

# bench/tracing_cost.py: FastAPI reads its own telemetry attribute; http.server calls the
# handler's do_POST and log_message.
_._native_telemetry
_.do_POST
_.log_message

# Module-level __getattr__ (PEP 562): Python calls it for a name the module lacks.
_.__getattr__  # loopwise.patterns: the Redis-backed parts, loaded on first use
