"""The simulator's ASGI app: two small downstream APIs with latency, jitter and errors.

    GET /loyalty/{user_id}     -> {"user_id", "points", "tier"}
    GET /shipments/{order_id}  -> {"order_id", "status", "eta"}
    GET /_sim                  -> the behaviour in force and what the server has seen
    PUT /_sim                  -> change the behaviour while running, e.g. {"mode": "hang"}

Modes: ``normal`` answers after ``latency_ms`` +/- ``jitter_ms`` and fails ``error_rate`` of
requests with 503; ``fail`` answers 503 to everything; ``hang`` never answers (until the
client gives up). To see a refused connection, stop the simulator.

Answers are a pure function of the id, so two runs agree; ids below 1 are unknown (404).
The state (behaviour and counters) lives on the app instance, never in module globals.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CONFIG_ENV", "SimConfig", "SimState", "app_from_env", "create_sim_app"]

CONFIG_ENV = "LOOPWISE_SIM_CONFIG"
"""The environment variable the CLI passes the configuration through to server workers."""

_TIERS = ((5000, "gold"), (1000, "silver"), (0, "bronze"))
_STATUSES = ("processing", "shipped", "in_transit", "delivered")


class SimConfig(BaseModel):
    """How the simulator behaves; every field can change at run time through ``PUT /_sim``."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=20.0, ge=0, le=600_000)
    jitter_ms: float = Field(default=0.0, ge=0, le=600_000)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    mode: Literal["normal", "fail", "hang"] = "normal"
    seed: int | None = None


class SimSeen(BaseModel):
    requests: int
    errors: int
    in_flight: int
    max_in_flight: int


class SimStatus(BaseModel):
    config: SimConfig
    seen: SimSeen


class Loyalty(BaseModel):
    user_id: int
    points: int
    tier: str


class Shipment(BaseModel):
    order_id: int
    status: str
    eta: dt.date | None


@dataclass
class SimState:
    """The behaviour in force and what the server has seen (for tests and the benchmark)."""

    config: SimConfig
    rng: random.Random
    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    # Arrival times on the loop clock, newest last; bounded so a long run cannot grow it.
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    # Told after each arrival is counted: lets a test wait for "N requests in flight".
    on_arrival: Callable[[SimState], None] | None = None

    def reset_counters(self) -> None:
        self.requests = self.errors = self.max_in_flight = 0
        self.arrivals.clear()


def _state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


State = Annotated[SimState, Depends(_state)]


async def _behave(request: Request, state: SimState) -> Response | None:
    """Apply the configured behaviour; a Response means "answer this instead"."""
    config = state.config
    if config.mode == "hang":
        # Answer never: hold the request until the client disconnects.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        return Response(status_code=499)
    delay = config.latency_ms + state.rng.uniform(-config.jitter_ms, config.jitter_ms)
    if delay > 0:
        await asyncio.sleep(delay / 1000)
    if config.mode == "fail" or state.rng.random() < config.error_rate:
        state.errors += 1
        body = {"title": "Service Unavailable", "status": 503, "detail": "simulated failure"}
        return Response(json.dumps(body), 503, media_type="application/problem+json")
    return None


def _not_found(kind: str, ident: int) -> Response:
    body = {"title": "Not Found", "status": 404, "detail": f"no {kind} {ident}"}
    return Response(json.dumps(body), 404, media_type="application/problem+json")


def create_sim_app(config: SimConfig | None = None) -> FastAPI:
    """Build a simulator app; its :class:`SimState` is ``app.state.sim``."""
    config = config or SimConfig()
    app = FastAPI(title="loopwise downstream simulator", version="0.1.0")
    app.state.sim = SimState(config=config, rng=random.Random(config.seed))  # noqa: S311  # simulated faults, not secrets

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        state: SimState = request.app.state.sim
        if request.url.path.startswith("/_sim"):
            return await call_next(request)
        state.requests += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        state.arrivals.append(asyncio.get_running_loop().time())
        if state.on_arrival is not None:
            state.on_arrival(state)
        try:
            return await call_next(request)
        finally:
            state.in_flight -= 1

    @app.get("/loyalty/{user_id}", response_model=Loyalty)
    async def loyalty(user_id: int, request: Request, state: State) -> Response | Loyalty:
        """A user's loyalty points and tier."""
        if (answer := await _behave(request, state)) is not None:
            return answer
        if user_id < 1:
            return _not_found("user", user_id)
        points = (user_id * 7919) % 10_000
        tier = next(name for floor, name in _TIERS if points >= floor)
        return Loyalty(user_id=user_id, points=points, tier=tier)

    @app.get("/shipments/{order_id}", response_model=Shipment)
    async def shipment(order_id: int, request: Request, state: State) -> Response | Shipment:
        """An order's shipment status and estimated delivery date."""
        if (answer := await _behave(request, state)) is not None:
            return answer
        if order_id < 1:
            return _not_found("order", order_id)
        status = _STATUSES[order_id % len(_STATUSES)]
        eta = None if status == "delivered" else dt.date(2026, 1, 1) + dt.timedelta(order_id % 9)
        return Shipment(order_id=order_id, status=status, eta=eta)

    @app.get("/_sim")
    async def status(state: State) -> SimStatus:
        """The behaviour in force and the counters."""
        seen = SimSeen(
            requests=state.requests,
            errors=state.errors,
            in_flight=state.in_flight,
            max_in_flight=state.max_in_flight,
        )
        return SimStatus(config=state.config, seen=seen)

    @app.put("/_sim")
    async def configure(new: SimConfig, state: State) -> SimConfig:
        """Replace the behaviour (and reset the counters)."""
        state.config = new
        if new.seed is not None:
            state.rng.seed(new.seed)
        state.reset_counters()
        return new

    return app


def app_from_env() -> FastAPI:
    """Factory for server workers: the CLI passes the configuration as JSON in the env."""
    raw = os.environ.get(CONFIG_ENV)
    return create_sim_app(SimConfig.model_validate_json(raw) if raw else None)
