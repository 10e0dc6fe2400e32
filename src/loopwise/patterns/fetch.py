"""Fan-out over many items (``fetch_all`` done right): results stream back as they finish.

    async with fetch_all(shipments, [f"/shipments/{i}" for i in ids], item_timeout=0.2) as results:
        async for outcome in results:          # in completion order, not input order
            if outcome.kind == "ok":
                use(outcome.value)
            else:
                note(outcome.item, outcome.kind, outcome.error)   # "error" or "timeout"

Every item gets its own :class:`Outcome`; one failure never ends the batch unless
``fail_fast=True`` (then the first error is raised and the rest cancelled). At most
``max_in_flight`` items run at once, counting results not yet consumed, so 10,000 URLs never
become 10,000 tasks, and a slow consumer slows the fan-out instead of piling up results.
Per-host limits are the :class:`~loopwise.patterns.outbound.Downstream`'s own.

The tasks live in a TaskGroup owned by the ``async with``: leaving the block (a ``break``,
an error, a cancellation) cancels and awaits whatever still runs; no task outlives it.
Each item runs under ``item_timeout`` and the deadline in force, whichever ends first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import httpx

from loopwise.patterns.deadlines import fail_after, time_left
from loopwise.patterns.exceptions import DeadlineExceeded, DownstreamTimeout
from loopwise.patterns.outbound import Downstream

__all__ = ["Outcome", "fetch_all", "stream_all"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T, R]):
    """One item's result: a value, or the error it ended with."""

    index: int
    item: T
    value: R | None = None
    error: Exception | None = None

    @property
    def kind(self) -> Literal["ok", "error", "timeout"]:
        if self.error is None:
            return "ok"
        if isinstance(self.error, DeadlineExceeded | DownstreamTimeout):
            return "timeout"
        return "error"


class _Results(Generic[T, R]):
    def __init__(
        self,
        group: asyncio.TaskGroup,
        fn: Callable[[T], Awaitable[R]],
        items: Iterator[tuple[int, T]],
        *,
        max_in_flight: int,
        timeout: float | None,
        fail_fast: bool,
    ) -> None:
        self._group = group
        self._fn = fn
        self._items: Iterator[tuple[int, T]] | None = items
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._fail_fast = fail_fast
        self._done: asyncio.Queue[Outcome[T, R]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        # Started and not yet handed to the consumer: running or waiting in `_done`.
        self._pending = 0

    def __aiter__(self) -> _Results[T, R]:
        return self

    async def __anext__(self) -> Outcome[T, R]:
        self._top_up()
        if self._pending == 0:
            raise StopAsyncIteration
        outcome = await self._done.get()
        self._pending -= 1
        if self._fail_fast and outcome.error is not None:
            self._items = None
            raise outcome.error
        self._top_up()  # keep the pipe full while the consumer handles this one
        return outcome

    def cancel_all(self) -> None:
        self._items = None
        for task in self._tasks:
            task.cancel()

    def _top_up(self) -> None:
        while self._items is not None and self._pending < self._max_in_flight:
            try:
                index, item = next(self._items)
            except StopIteration:
                self._items = None
                return
            task = self._group.create_task(self._run(index, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._pending += 1

    async def _run(self, index: int, item: T) -> None:
        bound = self._timeout if self._timeout is not None else time_left()
        try:
            if bound is None:
                value = await self._fn(item)
            else:
                async with fail_after(bound):
                    value = await self._fn(item)
        except Exception as error:
            self._done.put_nowait(Outcome(index, item, error=error))
        else:
            self._done.put_nowait(Outcome(index, item, value=value))


@asynccontextmanager
async def stream_all(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    max_in_flight: int = 100,
    item_timeout: float | None = None,
    fail_fast: bool = False,
) -> AsyncIterator[AsyncIterator[Outcome[T, R]]]:
    """Run ``fn`` over ``items`` concurrently; iterate the outcomes as they complete.

    Args:
        fn: the work per item; its exceptions become the item's outcome.
        items: consumed lazily, as slots free up.
        max_in_flight: items started and not yet consumed, at most.
        item_timeout: seconds per item (the deadline in force may cut it shorter).
        fail_fast: raise the first error out of the iteration and cancel the rest.
    """
    if max_in_flight < 1:
        raise ValueError(f"`max_in_flight` must be at least 1, got {max_in_flight}")
    if item_timeout is not None and item_timeout <= 0:
        raise ValueError(f"`item_timeout` must be positive, got {item_timeout}")
    escaped: BaseException | None = None
    async with asyncio.TaskGroup() as group:
        results = _Results(
            group,
            fn,
            enumerate(items),
            max_in_flight=max_in_flight,
            timeout=item_timeout,
            fail_fast=fail_fast,
        )
        try:
            yield results
        except BaseException as exc:
            # Re-raised below, after the group: raised inside it, the consumer's own error
            # would come out wrapped in an ExceptionGroup.
            escaped = exc
        finally:
            results.cancel_all()
    if escaped is not None:
        raise escaped


def fetch_all(
    downstream: Downstream,
    urls: Iterable[str],
    *,
    max_in_flight: int = 100,
    item_timeout: float | None = None,
    fail_fast: bool = False,
) -> AbstractAsyncContextManager[AsyncIterator[Outcome[str, httpx.Response]]]:
    """GET every URL through ``downstream`` (its limits, retries, breaker).

    See :func:`stream_all` for the arguments and the guarantees.
    """
    return stream_all(
        downstream.get,
        urls,
        max_in_flight=max_in_flight,
        item_timeout=item_timeout,
        fail_fast=fail_fast,
    )
