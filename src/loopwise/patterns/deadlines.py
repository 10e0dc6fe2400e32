"""A deadline set once per request (or job) and inherited by everything beneath it.

    async with deadline(0.5):            # the whole request: 500 ms
        profile = await load_profile()   # sees time_left() <= 0.5
        async with deadline(2.0):        # nested: cannot extend the outer 0.5 s
            ...

The deadline lives in a context variable, so tasks started inside (a TaskGroup, fan-out
branches) inherit it. Deadlines are absolute times on the event loop's clock; a nested
deadline takes the earlier of its own and the one in force.

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
    "Deadline",
    "current_deadline",
    "deadline",
    "move_on_after",
    "or_fallback",
    "time_left",
]

T = TypeVar("T")

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
        force (limits, pools, :func:`deadline`, fan-out) end by then. Yields the effective one.
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
async def deadline(seconds: float) -> AsyncIterator[Deadline]:
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
    """Like :func:`deadline`, but give up quietly: ``scope.expired`` says whether it did."""
    scope = _Scope()
    try:
        async with deadline(seconds):
            yield scope
    except DeadlineExceeded:
        scope.expired = True


async def or_fallback(awaitable: Awaitable[T], *, within: float, fallback: T) -> T:
    """Await for at most ``within`` seconds (and the deadline in force), else ``fallback``.

    Only the deadline turns into the fallback: any other error propagates. Use
    :func:`deadline` instead where running out of time must fail.
    """
    try:
        async with deadline(within):
            return await awaitable
    except DeadlineExceeded:
        return fallback
