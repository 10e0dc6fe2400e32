"""A deadline set once per request (or job) and inherited by everything beneath it.

    async with fail_after(0.5):          # the whole request: 500 ms, else DeadlineExceeded
        profile = await load_profile()   # sees time_left() <= 0.5
        async with fail_after(2.0):      # nested: cannot extend the outer 0.5 s
            ...
    async with move_on_after(0.2) as scope:   # gives up quietly: scope.expired says so
        ...

The names are anyio's: ``fail_after`` raises when the time runs out, ``move_on_after``
gives up quietly.

The deadline lives in a context variable, so tasks started inside (a TaskGroup, fan-out
branches) inherit it. Deadlines are absolute times on the running event loop's clock
(``loop.time()``), the one clock of the whole toolkit, so a test that runs the loop on
virtual time (see ``docs/patterns/time.md``) moves every deadline, wait and backoff
together. A nested deadline takes the earlier of its own and the one in force.

Where the code to bound cannot sit inside one ``async with`` (a web framework resolves a
request's dependencies, then calls its handler), start the clock where the work starts
and put it in force without a cancel scope; every bounded wait beneath honours it:

    with Deadline.after(0.1).in_force():   # at the request's arrival
        caller = await authenticate()       # a pool wait here counts against the 0.1 s
        await fan_out(..., within=0.1)      # ends by the deadline, not 0.1 s from now
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TypeVar

from loopwise.patterns.exceptions import DeadlineExceeded

__all__ = [
    "DEADLINE_MARGIN",
    "Deadline",
    "current_deadline",
    "fail_after",
    "move_on_after",
    "or_fallback",
    "time_left",
]

T = TypeVar("T")

# A wait that holds a caller in line (a limit slot, a pool worker, a downstream's own
# budget) gives up this long before the deadline in force. Were it to wait until the
# deadline itself, the deadline's cancellation would race it and the caller would see
# DeadlineExceeded instead of the cause (LimitTimeout, PoolSaturated); and a slot won with
# less time left than this could not be used before the caller has to take its fallback.
DEADLINE_MARGIN = 0.01

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "loopwise_deadline", default=None
)


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the running loop's clock (``loop.time()``)."""

    at: float
    budget: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        if seconds < 0:
            raise ValueError(f"`seconds` must not be negative, got {seconds}")
        return cls(asyncio.get_running_loop().time() + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - asyncio.get_running_loop().time())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    @contextmanager
    def in_force(self) -> Iterator[Deadline]:
        """Make this the deadline in force for the block, or keep the outer one if sooner.

        Nothing is cancelled when it passes: the waits beneath that honour the deadline in
        force (limits, pools, :func:`fail_after`, fan-out) end by then. Yields the effective one.
        """
        outer = _current.get()
        effective = self if outer is None or self.at < outer.at else outer
        token = _current.set(effective)
        try:
            yield effective
        finally:
            _current.reset(token)


def current_deadline() -> Deadline | None:
    """The deadline in force in this context, or None when unbounded."""
    return _current.get()


def time_left(default: float | None = None) -> float | None:
    """Seconds left before the deadline in force; ``default`` when there is none."""
    in_force = _current.get()
    return default if in_force is None else in_force.remaining()


@asynccontextmanager
async def fail_after(seconds: float) -> AsyncIterator[Deadline]:
    """Bound the block by ``seconds`` (or the outer deadline, if sooner).

    Raises:
        DeadlineExceeded: when the time runs out; the block's work is cancelled first.
    """
    with Deadline.after(seconds).in_force() as effective:
        try:
            async with asyncio.timeout_at(effective.at):
                yield effective
        except TimeoutError as exc:
            if isinstance(exc, DeadlineExceeded):
                raise
            raise DeadlineExceeded(
                f"deadline of {effective.budget:g}s exceeded", budget=effective.budget
            ) from None


@dataclass(slots=True)
class _Scope:
    expired: bool = False


@asynccontextmanager
async def move_on_after(seconds: float) -> AsyncIterator[_Scope]:
    """Like :func:`fail_after`, but give up quietly: ``scope.expired`` says whether it did."""
    scope = _Scope()
    try:
        async with fail_after(seconds):
            yield scope
    except DeadlineExceeded:
        scope.expired = True


async def or_fallback(awaitable: Awaitable[T], *, within: float, fallback: T) -> T:
    """Await for at most ``within`` seconds (and the deadline in force), else ``fallback``.

    Only the deadline turns into the fallback: any other error propagates. Use
    :func:`fail_after` instead where running out of time must fail.
    """
    try:
        async with fail_after(within):
            return await awaitable
    except DeadlineExceeded:
        return fallback
