"""Fan-out that streams: completion order, per-item outcomes, bounded tasks, clean exits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest

from loopwise.patterns import (
    CircuitBreaker,
    Downstream,
    Limits,
    Outcome,
    Retries,
    fetch_all,
    stream_all,
)
from loopwise_bench.sim import SimConfig, create_sim_app
from tests.servers import serve_asgi

Stream = AbstractAsyncContextManager[AsyncIterator[Outcome[int, int]]]


class Gated:
    """Work that finishes when the test opens its gate, or fails if asked to."""

    def __init__(self, count: int) -> None:
        self.gates = [asyncio.Event() for _ in range(count)]
        self.started: list[int] = []
        self.cancelled: list[int] = []

    async def __call__(self, item: int) -> int:
        self.started.append(item)
        try:
            await self.gates[item].wait()
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        if item % 10 == 7:
            raise ValueError(f"item {item} is bad")
        return item * 2


async def test_results_stream_back_in_completion_order() -> None:
    """Each outcome is handed over as soon as its item finishes, whatever the input order."""
    work = Gated(3)
    async with stream_all(work, [0, 1, 2]) as results:
        iterator = aiter(results)
        work.gates[2].set()
        first = await anext(iterator)
        work.gates[0].set()
        second = await anext(iterator)
        work.gates[1].set()
        third = await anext(iterator)
    assert [(o.index, o.value) for o in (first, second, third)] == [(2, 4), (0, 0), (1, 2)]


async def test_each_item_has_its_own_outcome() -> None:
    """Values, errors and timeouts come back per item; one failure does not end the batch."""
    work = Gated(10)
    for n in range(9):  # item 9 never finishes: it times out
        work.gates[n].set()
    outcomes: dict[int, Outcome[int, int]] = {}
    async with stream_all(work, range(10), item_timeout=0.05) as results:
        async for outcome in results:
            outcomes[outcome.item] = outcome
    assert sorted(outcomes) == list(range(10))
    assert outcomes[3].kind == "ok"
    assert outcomes[3].value == 6
    assert outcomes[7].kind == "error"
    assert isinstance(outcomes[7].error, ValueError)
    assert outcomes[9].kind == "timeout"


async def test_fail_fast_raises_the_first_error_and_cancels_the_rest() -> None:
    """With fail_fast, the first error ends the iteration and every other item is cancelled."""
    work = Gated(10)
    work.gates[7].set()
    with pytest.raises(ValueError, match="item 7"):
        await _consume(stream_all(work, range(10), fail_fast=True))
    assert sorted(work.cancelled) == [n for n in range(10) if n != 7]


async def _consume(stream: Stream) -> list[Outcome[int, int]]:
    async with stream as results:
        return [outcome async for outcome in results]


async def _raise_in_consumer(stream: Stream) -> None:
    async with stream as results:
        async for _ in results:
            raise KeyError("consumer bug")


async def test_in_flight_tasks_are_bounded() -> None:
    """Thousands of items never become thousands of tasks: at most `max_in_flight` run."""
    running = peak = 0

    async def work(item: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        return item

    tasks_before = len(asyncio.all_tasks())
    most_tasks = 0
    count = 0
    async with stream_all(work, range(3000), max_in_flight=10) as results:
        async for _ in results:
            count += 1
            most_tasks = max(most_tasks, len(asyncio.all_tasks()) - tasks_before)
    assert count == 3000
    assert peak <= 10
    assert most_tasks <= 10


async def test_stopping_early_leaves_no_task_behind() -> None:
    """A consumer that breaks out early gets every started item cancelled and awaited."""
    work = Gated(100)
    work.gates[0].set()
    tasks_before = asyncio.all_tasks()
    async with stream_all(work, range(100), max_in_flight=20) as results:
        async for _ in results:
            break
    assert asyncio.all_tasks() == tasks_before
    assert len(work.started) <= 21  # 20 at first, one refill (maybe cancelled before it ran)
    assert sorted(work.cancelled) == sorted(set(work.started) - {0})


async def test_consumer_errors_come_out_unwrapped() -> None:
    """An error in the consumer's own code propagates as itself, not as an ExceptionGroup."""
    work = Gated(5)
    work.gates[0].set()
    with pytest.raises(KeyError):
        await _raise_in_consumer(stream_all(work, range(5)))
    assert sorted(work.cancelled) == [1, 2, 3, 4]


async def test_fetch_all_respects_per_host_limits_and_reports_each_url() -> None:
    """fetch_all over a real server: every URL gets an outcome and the host limit holds."""
    app = create_sim_app(SimConfig(latency_ms=5, error_rate=0.3, seed=7))
    state = app.state.sim
    # The breaker stays out of it: at a 30% error rate, the order calls finish in could put
    # the first 20 past its 50% ratio and turn later calls into CircuitOpen, which the
    # server never sees (a flaky 35 == 14 in CI once).
    never_opens = CircuitBreaker("sim", failure_ratio=1.0, min_calls=1000)
    async with (
        serve_asgi(app) as url,
        Downstream(
            "sim",
            url,
            timeout=60.0,  # errors, not timeouts: a loaded machine must not turn one into other
            limits=Limits(concurrency=4),
            retry=Retries(attempts=1),
            breaker=never_opens,
        ) as api,
    ):
        urls = [f"/shipments/{n}" for n in range(1, 61)]
        kinds: dict[str, str] = {}
        async with fetch_all(api, urls, max_in_flight=20) as results:
            async for outcome in results:
                kinds[outcome.item] = outcome.kind
    assert set(kinds) == set(urls)
    assert sum(kind == "error" for kind in kinds.values()) == state.errors > 0
    assert state.max_in_flight <= 4


def test_bad_arguments_are_named() -> None:
    """Nonsense bounds are refused with a message naming the parameter."""
    with pytest.raises(ValueError, match="`max_in_flight` must be at least 1"):
        asyncio.run(_consume(stream_all(Gated(1), [0], max_in_flight=0)))
