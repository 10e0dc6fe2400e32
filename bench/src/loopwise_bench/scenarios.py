"""What is measured: the servers, the scenarios on each, and the ratios the report shows.

A scenario is one request mix against one server. Scenarios whose server or schema is not
there yet (an endpoint another branch is still building) are reported as skipped with the
reason, never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loopwise_bench.loadgen import Request, RequestPlan

__all__ = [
    "COMPARISONS",
    "SCENARIOS",
    "SERVERS",
    "Comparison",
    "Identity",
    "PlanContext",
    "Scenario",
    "Server",
]


@dataclass(frozen=True, slots=True)
class Server:
    """An app to serve: ``factory`` is the "module:function" granian builds in each worker.

    ``env`` is added to its environment; ``{sim50}``, ``{sim200}`` (downstream simulator
    URLs) and ``{smtp_fast}``, ``{smtp_slow}`` (SMTP sink ports) are filled in by the run.
    """

    name: str
    factory: str
    title: str
    needs_database: bool = False
    env: tuple[tuple[str, str], ...] = ()

    @property
    def is_loopwise(self) -> bool:
        return self.factory.startswith("loopwise.service.")


def _loopwise_env(smtp: str, **extra: str) -> tuple[tuple[str, str], ...]:
    base = {
        "LOOPWISE_SMTP_HOST": "127.0.0.1",
        "LOOPWISE_SMTP_PORT": smtp,
        "LOOPWISE_SMTP_TLS": "none",
        # Enough per-process outbound slots for the overview's fan-out at full load:
        # the default (20) is sized for a downstream that must be protected.
        "LOOPWISE_LOYALTY_CONCURRENCY": "256",
        "LOOPWISE_SHIPMENTS_CONCURRENCY": "256",
    }
    return tuple({**base, **extra}.items())


# The overview's budget: 100 ms for the whole request, each downstream call included.
_BUDGET = {
    "LOOPWISE_OVERVIEW_DEADLINE": "0.1",
    "LOOPWISE_LOYALTY_TIMEOUT": "0.1",
    "LOOPWISE_SHIPMENTS_TIMEOUT": "0.1",
}
_SERVICE_FACTORY = "loopwise.service.app:create_app_from_env"


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("asgi", "loopwise_bench.apps.bare:create_app", "bare ASGI"),
        Server("fastapi", "loopwise_bench.apps.hello:create_app", "bare FastAPI"),
        Server(
            "floor",
            "loopwise_bench.apps.floor:create_app",
            "FastAPI + asyncpg pool",
            needs_database=True,
        ),
        Server(
            "loopwise_no_watchdog",
            _SERVICE_FACTORY,
            "loopwise, watchdog off",
            needs_database=True,
            env=_loopwise_env("{smtp_fast}", LOOPWISE_WATCHDOG_ENABLED="false"),
        ),
        Server(
            "loopwise",
            _SERVICE_FACTORY,
            "loopwise (loyalty 50 ms, shipments 200 ms, 100 ms budget; SMTP 1 ms)",
            needs_database=True,
            env=_loopwise_env(
                "{smtp_fast}",
                LOOPWISE_LOYALTY_URL="{sim50}",
                LOOPWISE_SHIPMENTS_URL="{sim200}",
                **_BUDGET,
            ),
        ),
        Server(
            "loopwise_one_downstream",
            _SERVICE_FACTORY,
            "loopwise (loyalty 50 ms only)",
            needs_database=True,
            env=_loopwise_env("{smtp_fast}", LOOPWISE_LOYALTY_URL="{sim50}", **_BUDGET),
        ),
        Server(
            "loopwise_slow_smtp",
            _SERVICE_FACTORY,
            "loopwise (SMTP 2 s)",
            needs_database=True,
            env=_loopwise_env("{smtp_slow}"),
        ),
        Server(
            "naive",
            "loopwise_bench.apps.naive:create_app",
            "naive version (SMTP 1 ms)",
            needs_database=True,
            env=(
                ("LOOPWISE_BENCH_DOWNSTREAMS", "loyalty={sim50},shipments={sim200}"),
                ("LOOPWISE_BENCH_SMTP_PORT", "{smtp_fast}"),
            ),
        ),
        Server(
            "naive_slow_smtp",
            "loopwise_bench.apps.naive:create_app",
            "naive version (SMTP 2 s)",
            needs_database=True,
            env=(("LOOPWISE_BENCH_SMTP_PORT", "{smtp_slow}"),),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Identity:
    """A seeded user the load generator acts as."""

    user_id: int
    token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass(frozen=True, slots=True)
class PlanContext:
    """What the request plans draw on: seeded users, with tokens once logged in."""

    identities: Sequence[Identity] = ()
    password: str = ""
    email_of: Callable[[int], str] = str


@dataclass(frozen=True, slots=True)
class Scenario:
    """One request mix against one server, measured closed-loop and at a constant rate."""

    name: str
    server: str
    title: str
    plan: Callable[[PlanContext], RequestPlan]
    needs_tokens: bool = False
    paced: bool = True
    tags: frozenset[str] = field(default_factory=frozenset)
    rate: float | None = None  # the constant rate, req/s, if below the run's
    paced_connections: int | None = None  # paced connections, if not the run's
    max_connections: int | None = None  # closed-loop concurrency cap (slow endpoints)


def _fixed(method: str, path: str) -> Callable[[PlanContext], RequestPlan]:
    return lambda _: RequestPlan([Request(method, path)])


def _user_by_id(ctx: PlanContext) -> RequestPlan:
    return RequestPlan([Request("GET", f"/users/{i.user_id}", i.auth) for i in ctx.identities])


def _each_caller(path: str) -> Callable[[PlanContext], RequestPlan]:
    return lambda ctx: RequestPlan([Request("GET", path, i.auth) for i in ctx.identities])


def _overview(ctx: PlanContext) -> RequestPlan:
    return RequestPlan([Request("GET", "/users/me/overview", i.auth) for i in ctx.identities])


def _order_body(n: int) -> str:
    item = {"sku": f"SKU-{n % 500}", "quantity": 1 + n % 3, "unit_price_cents": 100 + n}
    return json.dumps({"items": [item]})


def _mixed(ctx: PlanContext) -> RequestPlan:
    # 80% reads, 15% overview, 5% writes, each user's share the same.
    requests: list[Request] = []
    for n, i in enumerate(ctx.identities):
        writing = {**i.auth, "Content-Type": "application/json"}
        requests += [
            Request("GET", f"/users/{i.user_id}", i.auth, weight=16),
            Request("GET", "/users/me/overview", i.auth, weight=3),
            Request("POST", "/users/me/orders", writing, _order_body(n), weight=1),
        ]
    return RequestPlan(requests)


def _login(ctx: PlanContext) -> RequestPlan:
    bodies = (
        json.dumps({"email": ctx.email_of(i.user_id), "password": ctx.password})
        for i in ctx.identities
    )
    header = {"Content-Type": "application/json"}
    return RequestPlan([Request("POST", "/login", header, body) for body in bodies])


def _register(ctx: PlanContext) -> RequestPlan:
    # "{seq}" becomes unique per request in the load scripts: every request a new account.
    body = json.dumps(
        {
            "email": "new-{seq}@bench.example.com",
            "password": ctx.password,
            "display_name": "New user {seq}",
        }
    )
    header = {"Content-Type": "application/json"}
    return RequestPlan([Request("POST", "/register", header, body)])


_BASELINE = frozenset({"baseline"})
_SERVICE = frozenset({"service"})

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("asgi_hello", "asgi", "bare ASGI hello", _fixed("GET", "/hello"), tags=_BASELINE),
        Scenario(
            "fastapi_hello", "fastapi", "FastAPI hello", _fixed("GET", "/hello"), tags=_BASELINE
        ),
        Scenario(
            "floor_user_by_id",
            "floor",
            "GET /users/{id}: FastAPI + asyncpg floor",
            _user_by_id,
            tags=_BASELINE,
        ),
        Scenario(
            "user_by_id",
            "loopwise",
            "GET /users/{id}",
            _user_by_id,
            needs_tokens=True,
            tags=_SERVICE,
        ),
        Scenario(
            "users_me",
            "loopwise",
            "GET /users/me",
            _each_caller("/users/me"),
            needs_tokens=True,
            tags=_SERVICE,
        ),
        Scenario(
            "preferences",
            "loopwise",
            "GET /users/me/preferences",
            _each_caller("/users/me/preferences"),
            needs_tokens=True,
            tags=_SERVICE,
        ),
        Scenario(
            "overview",
            "loopwise",
            "GET /users/me/overview (50 ms + 200 ms downstreams, 100 ms budget)",
            _overview,
            needs_tokens=True,
            tags=_SERVICE,
            rate=50.0,
            paced_connections=16,
        ),
        Scenario(
            "overview_one_downstream",
            "loopwise_one_downstream",
            "GET /users/me/overview (one 50 ms downstream)",
            _overview,
            needs_tokens=True,
            tags=_SERVICE,
            rate=50.0,
            paced_connections=16,
        ),
        Scenario(
            "login",
            "loopwise",
            "POST /login (argon2id verify)",
            _login,
            tags=_SERVICE,
            rate=4.0,
            paced_connections=4,
            max_connections=16,
        ),
        Scenario(
            "register",
            "loopwise",
            "POST /register, SMTP answering in 1 ms",
            _register,
            tags=_SERVICE,
            rate=4.0,
            paced_connections=4,
            max_connections=16,
        ),
        Scenario(
            "register_slow_smtp",
            "loopwise_slow_smtp",
            "POST /register, SMTP answering in 2 s",
            _register,
            tags=_SERVICE,
            rate=4.0,
            paced_connections=4,
            max_connections=16,
        ),
        Scenario(
            "mixed",
            "loopwise",
            "mixed: 80% GET /users/{id}, 15% overview, 5% POST orders",
            _mixed,
            needs_tokens=True,
            tags=_SERVICE,
            rate=300.0,
            paced_connections=64,
        ),
        Scenario(
            "naive_user_by_id",
            "naive",
            "GET /users/{id}: naive version",
            _user_by_id,
            needs_tokens=True,
            tags=_BASELINE,
            rate=200.0,
        ),
        Scenario(
            "naive_overview",
            "naive",
            "GET /users/me/overview: naive version",
            _overview,
            needs_tokens=True,
            tags=_BASELINE,
            rate=2.0,
            paced_connections=4,
            max_connections=16,  # it serves ~7/s: more connections only build a queue
        ),
        Scenario(
            "naive_register",
            "naive",
            "POST /register: naive version, SMTP 1 ms",
            _register,
            tags=_BASELINE,
            rate=4.0,
            paced_connections=4,
            max_connections=16,
        ),
        Scenario(
            "naive_register_slow_smtp",
            "naive_slow_smtp",
            "POST /register: naive version, SMTP 2 s",
            _register,
            tags=_BASELINE,
            rate=4.0,
            paced_connections=4,
            max_connections=16,
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Comparison:
    """``scenario`` against ``baseline``, both measured in the same run; ``target`` if any."""

    scenario: str
    baseline: str
    meaning: str
    target: float | None = None


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("fastapi_hello", "asgi_hello", "framework cost (FastAPI vs bare ASGI)"),
    Comparison("floor_user_by_id", "fastapi_hello", "one pooled row read vs no I/O"),
    Comparison("floor_user_by_id", "naive_user_by_id", "a pool vs a connection per request"),
    Comparison("user_by_id", "floor_user_by_id", "loopwise vs its floor", target=0.9),
    Comparison("user_by_id", "naive_user_by_id", "loopwise vs the naive version", target=15.0),
    Comparison("overview", "naive_overview", "loopwise overview vs the naive version"),
    Comparison("register_slow_smtp", "register", "register: SMTP 2 s vs 1 ms"),
    Comparison("naive_register_slow_smtp", "naive_register", "naive register: SMTP 2 s vs 1 ms"),
)
