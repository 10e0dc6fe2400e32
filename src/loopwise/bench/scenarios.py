"""What is measured: the servers, the scenarios on each, and the ratios the report shows.

A scenario is one request mix against one server. Scenarios whose server or schema is not
there yet (an endpoint another branch is still building) are reported as skipped with the
reason, never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loopwise.bench.loadgen import Request, RequestPlan

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
    """An app to serve: ``factory`` is the "module:function" granian builds in each worker."""

    name: str
    factory: str
    title: str
    needs_tables: tuple[str, ...] = ()


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("asgi", "loopwise.bench.apps.bare:create_app", "bare ASGI"),
        Server("fastapi", "loopwise.bench.apps.hello:create_app", "bare FastAPI"),
        Server(
            "floor",
            "loopwise.bench.apps.floor:create_app",
            "FastAPI + asyncpg pool",
            needs_tables=("users",),
        ),
        Server(
            "loopwise",
            "loopwise.service.app:create_app_from_env",
            "loopwise",
            needs_tables=("users", "sessions"),
        ),
        Server(
            "naive",
            "loopwise.bench.apps.naive:create_app",
            "seed's naive version",
            needs_tables=("users", "sessions"),
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
    needs_paths: tuple[str, ...] = ()  # OpenAPI paths the server must have
    needs_tokens: bool = False
    paced: bool = True
    tags: frozenset[str] = field(default_factory=frozenset)


def _fixed(method: str, path: str) -> Callable[[PlanContext], RequestPlan]:
    return lambda _: RequestPlan([Request(method, path)])


def _user_by_id(ctx: PlanContext) -> RequestPlan:
    return RequestPlan([Request("GET", f"/users/{i.user_id}", i.auth) for i in ctx.identities])


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
            needs_paths=("/users/{user_id}",),
            needs_tokens=True,
            tags=_SERVICE,
        ),
        Scenario(
            "overview",
            "loopwise",
            "GET /users/me/overview",
            _overview,
            needs_paths=("/users/me/overview",),
            needs_tokens=True,
            tags=_SERVICE,
        ),
        Scenario(
            "login",
            "loopwise",
            "POST /login",
            _login,
            needs_paths=("/login",),
            tags=_SERVICE,
        ),
        Scenario(
            "mixed",
            "loopwise",
            "mixed: 80% reads, 15% overview, 5% writes",
            _mixed,
            needs_paths=("/users/{user_id}", "/users/me/overview", "/users/me/orders"),
            needs_tokens=True,
            tags=_SERVICE,
        ),
        Scenario(
            "naive_user_by_id",
            "naive",
            "GET /users/{id}: seed's naive version",
            _user_by_id,
            needs_tokens=True,
            tags=_BASELINE,
        ),
        Scenario(
            "naive_overview",
            "naive",
            "GET /users/me/overview: seed's naive version",
            _overview,
            needs_tokens=True,
            tags=_BASELINE,
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
    Comparison("user_by_id", "floor_user_by_id", "loopwise vs its floor", target=0.9),
    Comparison("user_by_id", "naive_user_by_id", "loopwise vs the seed's naive", target=15.0),
    Comparison("overview", "naive_overview", "loopwise overview vs the seed's naive"),
)
