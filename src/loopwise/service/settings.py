"""Service settings, read from ``LOOPWISE_*`` environment variables and an optional ``.env``.

Nothing here runs at import: :func:`load_settings` is called by the CLI when a command
starts, so a bad value stops start-up with one line instead of a traceback.

    LOOPWISE_DATABASE_URL=postgresql://app@db/app loopwise serve   # a real PostgreSQL
    loopwise serve                                                 # embedded PostgreSQL
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from loopwise.service.priority import ThreadPriority

__all__ = ["InvalidSettings", "Settings", "load_settings"]

PositiveSeconds = Annotated[float, Field(gt=0, le=3600)]
# "idle" or "nice:N" as written, not JSON (NoDecode): pydantic-settings would json.loads it.
Priority = Annotated[ThreadPriority, NoDecode, BeforeValidator(ThreadPriority.parse)]
HashIsolation = Literal["process", "thread"]


class Settings(BaseSettings):
    """Everything an operator can set, with the rule each value must follow."""

    model_config = SettingsConfigDict(
        env_prefix="LOOPWISE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Where the data lives. No URL means an embedded PostgreSQL under `data_dir`.
    database_url: str | None = None
    # Behind a transaction-pooling PgBouncer (docs/operations/cluster.md, "PgBouncer"):
    # set this to a URL that reaches PostgreSQL itself. LISTEN (session cache, job
    # wake-ups) and migrations use it, and queries on the pooled URL then run without
    # cached prepared statements or per-connection settings. Unset: no pooler in between.
    database_direct_url: str | None = None
    data_dir: Path = Path(".loopwise")
    migrate_on_start: bool | None = Field(
        default=None,
        description="Apply migrations at start-up; defaults to on for the embedded database only.",
    )

    # The asyncpg pool. Each connection is a PostgreSQL backend process: keep it small.
    db_pool_min: int = Field(default=2, ge=0, le=1000)
    db_pool_max: int = Field(default=10, ge=1, le=1000)
    db_statement_timeout: PositiveSeconds = 5.0
    db_acquire_timeout: PositiveSeconds = 2.0

    # Serving.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    shutdown_grace: PositiveSeconds = 10.0
    ready_timeout: PositiveSeconds = 1.0  # /readyz gives PostgreSQL this long to answer
    # Rolling deploys (docs/operations/cluster.md, "Drain"): seconds after SIGTERM during
    # which /readyz answers 503 while every other request is served, so a load balancer
    # takes the instance out of rotation before it stops accepting. 5 s covers HAProxy's
    # `inter 1s fall 2` with margin and a Kubernetes readiness probe every 2 s; 0 stops at once.
    drain_delay: float = Field(default=5.0, ge=0, le=600)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Overload (docs/operations/overload.md): requests in flight per process; the excess is answered
    # 503 with Retry-After at once instead of queueing. Connections each worker holds open
    # (granian's backpressure): far above the request limit, since idle keep-alive
    # connections cost the app nothing and one refused would stall in the listen backlog.
    max_in_flight: int = Field(default=128, ge=1, le=100_000)
    admission_queue: int = Field(default=4096, ge=0, le=1_000_000)  # requests that may wait
    admission_wait: float = Field(default=0.5, ge=0, le=60)  # seconds one may wait; 0: none
    # Slow request bodies (http/bodies.py): a body is read before its request takes an
    # admission slot, and must arrive whole within `body_timeout` seconds (else 408);
    # at most `max_body_readers` bodies arrive at once (past it, 503 at once).
    body_timeout: float = Field(default=5.0, gt=0, le=600)
    max_body_readers: int = Field(default=1024, ge=1, le=1_000_000)
    max_connections: int = Field(default=8192, ge=64, le=1_000_000)
    listen_backlog: int = Field(default=4096, ge=128, le=65_535)  # capped by net.core.somaxconn
    # Reverse proxies whose X-Forwarded-For is believed (networks, e.g. ["10.0.0.0/8"]).
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list, max_length=64)

    # Never block the event loop (docs/patterns/never-block.md).
    watchdog_enabled: bool = True
    watchdog_threshold: float = Field(default=0.1, gt=0, le=60)  # seconds: a stall
    watchdog_interval: float = Field(default=0.05, ge=0.001, le=60)  # seconds between heartbeats
    blocking_workers: int = Field(default=8, ge=1, le=256)  # threads for blocking calls
    blocking_queue: int = Field(default=64, ge=0, le=100_000)  # callers that may wait
    metrics_enabled: bool = True  # serve GET /metrics
    # Responses: gzip bodies of at least this many bytes when the client accepts gzip
    # (docs/api/contract.md); smaller ones gain less than the header and CPU cost. 0: off.
    gzip_min_bytes: int = Field(default=1024, ge=0, le=16 * 1024 * 1024)
    # OpenTelemetry traces over OTLP, configured by the standard OTEL_* variables
    # (service/tracing.py); off, no span work runs per request.
    otel_enabled: bool = False
    # Accounts. Passwords are hashed with argon2id (RFC 9106's second recommended
    # profile by default: t=3, 64 MiB, p=4) on a bounded thread pool, one worker per core:
    # every hash in flight holds `argon2_memory_kib` of memory.
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=64 * 1024, ge=8, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(default=4, ge=1, le=64)
    password_hash_workers: int | None = Field(
        default=None, ge=1, le=64, description="Unset: the cores shared by the server workers."
    )
    password_hash_queue: int = Field(default=64, ge=0, le=10_000)
    # Linux: the hashing threads' CPU priority, "idle" (SCHED_IDLE) or "nice:N" (0-19), so a
    # burst of hashing cannot starve the loop (docs/operations/passwords.md).
    password_hash_priority: Priority = ThreadPriority(idle=True)
    # Where hashes run: "process" (a pool of processes of their own) or "thread" (threads
    # of the server's process, whose GIL they then share with the loop).
    password_hash_isolation: HashIsolation = "process"  # noqa: S105  # a mode, not a secret
    # Seconds a request waits for a hash (queue included) before 503 + Retry-After.
    password_hash_deadline: PositiveSeconds = 10.0
    session_ttl: float = Field(default=24 * 3600, ge=60, le=90 * 24 * 3600)
    # Login throttling (accounts/throttle.py): failures per fixed window, per account and
    # client (tight, binds that client only), per account from everywhere (loose, so a
    # stranger cannot lock the owner out with a few guesses), per client address.
    login_failure_window: float = Field(default=900, ge=1, le=24 * 3600)
    login_max_failures_per_client: int = Field(default=5, ge=1, le=1000)
    login_max_failures_per_account: int = Field(default=100, ge=1, le=100_000)
    login_max_failures_per_address: int = Field(default=50, ge=1, le=100_000)
    # Sessions kept in memory per process, forgotten when PostgreSQL announces a change
    # (docs/operations/sessions.md); a TTL of 0 turns the cache off. The preferences
    # documents' cache follows the same rule and takes the same bounds.
    session_cache_ttl: float = Field(default=60, ge=0, le=3600)
    session_cache_size: int = Field(default=100_000, ge=1, le=10_000_000)
    # One deadline for GET /users/me/overview, its downstream branches included.
    overview_deadline: PositiveSeconds = 1.0
    # Optional downstream services the overview calls; unset means not called. A rate of 0
    # means no rate limit. Without LOOPWISE_REDIS_URL limits and breakers are per process
    # (N processes make N times the calls); with it every process shares them.
    loyalty_url: str | None = None
    loyalty_timeout: PositiveSeconds = 0.3
    loyalty_concurrency: int = Field(default=20, ge=1, le=10_000)
    loyalty_rate: float = Field(default=0.0, ge=0, le=1_000_000)
    shipments_url: str | None = None
    shipments_timeout: PositiveSeconds = 0.3
    shipments_concurrency: int = Field(default=20, ge=1, le=10_000)
    shipments_rate: float = Field(default=0.0, ge=0, le=1_000_000)
    # Shared outbound limits and breakers (docs/operations/downstreams.md, "Shared limits").
    # Each Redis command may take `redis_timeout` seconds; past it, or with Redis away, each
    # process falls back to limit // `redis_processes` (set it to the number of processes
    # sharing the limits) until Redis answers again. A slot is held `redis_lease` at most.
    redis_url: str | None = None
    redis_timeout: float = Field(default=0.05, gt=0, le=5)
    redis_processes: int = Field(default=1, ge=1, le=10_000)
    redis_lease: PositiveSeconds = 10.0

    # Logs: "auto" is JSON when stderr is not a terminal.
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Email. No host means emails are written as .eml files into <data_dir>/outbox/.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"  # "tls" is implicit TLS (465)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "loopwise <no-reply@loopwise.invalid>"
    smtp_connect_timeout: PositiveSeconds = 10.0
    smtp_send_timeout: PositiveSeconds = 30.0
    # The relay offers SMTPUTF8 (RFC 6531): addresses whose local part is not ASCII
    # (josé@, 用户@) may register, and are sent with SMTPUTF8. Off, they are refused at
    # registration, since no mail could reach them (accounts/mailboxes.py).
    smtp_utf8: bool = False

    # Account lifecycle (docs/operations/accounts.md): verification and reset links, and
    # the throttles on requests that send email. Links in emails start with `public_url`,
    # never with a request's Host header (a client picks that one).
    public_url: str = "http://127.0.0.1:8000"
    email_verify_ttl: float = Field(default=48 * 3600, ge=300, le=30 * 86400)  # seconds
    # Short: a reset link in a mailbox is a password (OWASP: "expire after a short time").
    password_reset_ttl: float = Field(default=1800, ge=60, le=86400)  # seconds
    email_throttle_window: float = Field(default=3600, ge=1, le=86400)  # seconds
    password_reset_max_per_email: int = Field(default=3, ge=1, le=1000)  # per window
    password_reset_max_per_client: int = Field(default=20, ge=1, le=100_000)  # per window
    verify_resend_max: int = Field(default=3, ge=1, le=1000)  # per account per window

    # Background jobs (the durable queue in PostgreSQL).
    jobs_in_process: bool = Field(
        default=True, description="Run job workers inside `serve`; off when `worker` runs them."
    )
    jobs_concurrency: int = Field(default=4, ge=1, le=256)
    jobs_max_attempts: int = Field(default=8, ge=1, le=100)
    jobs_lease: PositiveSeconds = 30.0
    jobs_timeout: PositiveSeconds = 60.0
    jobs_poll_interval: PositiveSeconds = 5.0
    jobs_backoff_base: PositiveSeconds = 2.0
    jobs_backoff_max: PositiveSeconds = 600.0
    jobs_prune_after: float = Field(default=7 * 86400.0, gt=0, le=365 * 86400.0)
    jobs_prune_every: PositiveSeconds = 3600.0

    @field_validator("database_url", "database_direct_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        # Not pydantic's PostgresDsn: it refuses a Unix-socket URL (empty host, ?host=/dir),
        # which is how the embedded server and many local setups are reached.
        if value is None or value == "":
            return None
        if urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        return value.rstrip("/")

    @field_validator("loyalty_url", "shipments_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("db_pool_min must not exceed db_pool_max")
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_kib must be at least 8 * argon2_parallelism")
        return self

    @model_validator(mode="after")
    def _direct_url_needs_a_pooled_one(self) -> Settings:
        if self.database_direct_url is not None and self.database_url is None:
            raise ValueError("database_direct_url needs database_url (the pooled URL) too")
        return self

    @model_validator(mode="after")
    def _jobs_rules(self) -> Settings:
        if self.jobs_backoff_base > self.jobs_backoff_max:
            raise ValueError("jobs_backoff_base must not exceed jobs_backoff_max")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("smtp_username and smtp_password must be set together")
        return self

    @property
    def embedded(self) -> bool:
        """True when no database URL is set and loopwise runs its own PostgreSQL."""
        return self.database_url is None

    @property
    def pooled(self) -> bool:
        """True when the database URL goes through a transaction pooler (a direct URL is set)."""
        return self.database_direct_url is not None

    def direct_dsn(self, dsn: str) -> str:
        """Where LISTEN and migrations connect: the direct URL, else ``dsn`` itself."""
        return self.database_direct_url or dsn

    @property
    def password_hash_threads(self) -> int:
        """argon2 threads per process: the setting, else the cores split among workers."""
        if self.password_hash_workers is not None:
            return self.password_hash_workers
        return max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def should_migrate_on_start(self) -> bool:
        if self.migrate_on_start is None:
            return self.embedded
        return self.migrate_on_start


class InvalidSettings(Exception):
    """A setting broke its rule; ``str()`` is one line naming the variable and the rule."""


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings.

    Raises:
        InvalidSettings: with one line per bad value, naming its environment variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = f"LOOPWISE_{field.upper()}" if error["loc"] else "settings"
            lines.append(f"{name}: {error['msg']}")
        raise InvalidSettings("; ".join(lines)) from None
