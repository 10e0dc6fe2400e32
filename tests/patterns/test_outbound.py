"""Downstream's rules, against httpx.MockTransport: what is retried, what fails, what counts.

Backoff runs on virtual time: the loop's clock jumps over each wait, and the tests read the
time it took exactly.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from loopwise.patterns import (
    DEADLINE_MARGIN,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    DeadlineExceeded,
    Downstream,
    DownstreamStatusError,
    DownstreamTimeout,
    DownstreamUnreachable,
    Limits,
    LimitTimeout,
    ResourceClosed,
    Retries,
    RetryBudget,
    fail_after,
)

pytestmark = pytest.mark.virtual_time

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Script:
    """A mock downstream answering from a script, one entry per request; records requests."""

    def __init__(self, *answers: int | Exception | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(answer, json={"status": answer})


def _downstream(script: Script, **kwargs: Any) -> Downstream:
    return Downstream("api", "http://api.test", transport=httpx.MockTransport(script), **kwargs)


class Stopwatch:
    """Loop time since it was made: exact on virtual time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()

    @property
    def elapsed(self) -> float:
        return self._loop.time() - self._started


async def test_idempotent_call_is_retried_on_503() -> None:
    """A GET answered 503 is retried and the later 200 returned."""
    script = Script(503, 200)
    async with _downstream(script) as api:
        watch = Stopwatch()
        response = await api.get("/x")
    assert response.status_code == 200
    assert len(script.requests) == 2
    assert 0 <= watch.elapsed <= 0.05  # one backoff, jittered below its 50 ms cap


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_retries_are_bounded_by_attempts(status: int) -> None:
    """A downstream that keeps failing gets `attempts` tries, then the status error."""
    script = Script(status)
    async with _downstream(script, retry=Retries(attempts=3)) as api:
        with pytest.raises(DownstreamStatusError) as caught:
            await api.get("/x")
    assert caught.value.status == status
    assert len(script.requests) == 3


async def test_post_is_not_retried() -> None:
    """A non-idempotent request is sent once, whatever the answer."""
    script = Script(503, 200)
    async with _downstream(script) as api:
        with pytest.raises(DownstreamStatusError):
            await api.request("POST", "/x", json={"a": 1})
    assert len(script.requests) == 1


async def test_post_declared_idempotent_is_retried() -> None:
    """`idempotent=True` (e.g. with an idempotency key) allows retrying a POST."""
    script = Script(503, 200)
    async with _downstream(script) as api:
        response = await api.request("POST", "/x", json={"a": 1}, idempotent=True)
    assert response.status_code == 200
    assert len(script.requests) == 2


async def test_500_is_not_retried() -> None:
    """A 500 is a bug downstream, not a passing condition: no retry."""
    script = Script(500, 200)
    async with _downstream(script) as api:
        with pytest.raises(DownstreamStatusError):
            await api.get("/x")
    assert len(script.requests) == 1


async def test_4xx_is_an_answer() -> None:
    """A 404 is returned like any answer, not raised and not retried."""
    script = Script(404)
    async with _downstream(script) as api:
        response = await api.get("/x")
    assert response.status_code == 404
    assert api.breaker.stats().window_failures == 0


async def test_429_waits_for_retry_after() -> None:
    """A 429 is retried after its Retry-After (seconds), and does not count against the breaker."""
    throttled = httpx.Response(429, headers={"Retry-After": "2"})
    script = Script(throttled, 200)
    async with _downstream(script) as api:
        watch = Stopwatch()
        response = await api.get("/x")
        stats = api.breaker.stats()
    assert response.status_code == 200
    assert watch.elapsed == 2.0
    assert stats.window_failures == 0


async def test_retry_after_as_http_date() -> None:
    """Retry-After given as an HTTP-date is turned into seconds from now."""
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    throttled = httpx.Response(503, headers={"Retry-After": when})
    script = Script(throttled, 200)
    async with _downstream(script) as api:
        watch = Stopwatch()
        await api.get("/x")
    assert 28 <= watch.elapsed <= 30


async def test_connect_errors_are_retried_read_errors_are_not() -> None:
    """A refused connection is retried; a connection broken mid-answer is not."""
    refused = httpx.ConnectError("refused")
    script = Script(refused, 200)
    async with _downstream(script) as api:
        assert (await api.get("/x")).status_code == 200
    broken = Script(httpx.ReadError("reset"), 200)
    async with _downstream(broken) as api:
        with pytest.raises(DownstreamUnreachable):
            await api.get("/x")
    assert len(broken.requests) == 1


async def test_own_timeout_vs_the_deadline() -> None:
    """A timeout within its own budget is DownstreamTimeout; at the deadline, DeadlineExceeded."""
    script = Script(httpx.ReadTimeout("slow"))
    async with _downstream(script, timeout=1.0) as api:
        with pytest.raises(DownstreamTimeout):
            await api.get("/x")
        with pytest.raises(DeadlineExceeded):
            await _within(0.5, api.get("/x"))


async def _within(seconds: float, call: Awaitable[httpx.Response]) -> httpx.Response:
    async with fail_after(seconds):
        return await call


async def test_httpx_timeout_comes_from_the_time_left() -> None:
    """Each attempt's httpx timeouts are the time left, when that is less than `timeout`."""
    script = Script(200)
    async with _downstream(script, timeout=5.0) as api:
        await api.get("/x")
        await _within(0.3, api.get("/x"))
    unbounded, bounded = (r.extensions["timeout"] for r in script.requests)
    assert unbounded["read"] == 5.0
    assert bounded["read"] == 0.3  # virtual time: nothing passed before the attempt
    assert bounded["connect"] == bounded["read"]


async def test_breaker_opens_and_fails_fast() -> None:
    """After enough failures the breaker opens and calls stop reaching the downstream."""
    script = Script(500)
    breaker = CircuitBreaker("api", min_calls=4, failure_ratio=0.5)
    async with _downstream(script, breaker=breaker) as api:
        for _ in range(4):
            with pytest.raises(DownstreamStatusError):
                await api.get("/x")
        assert breaker.state is CircuitState.OPEN
        with pytest.raises(CircuitOpen):
            await api.get("/x")
    assert len(script.requests) == 4


async def test_retry_budget_is_shared() -> None:
    """Downstreams sharing a spent budget stop retrying."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, burst=1)
    script = Script(503)
    async with _downstream(script, retry=Retries(attempts=5, budget=budget)) as api:
        for _ in range(3):
            with pytest.raises(DownstreamStatusError):
                await api.get("/x")
    assert len(script.requests) == 3 + 1  # one retry in all, then the budget said no
    assert budget.stats().denied == 3


async def test_lifecycle_is_one_way() -> None:
    """A downstream refuses use before opening and after closing, and cannot be reopened."""
    api = _downstream(Script(200))
    with pytest.raises(ResourceClosed, match="unopened"):
        await api.get("/x")
    async with api:
        await api.get("/x")
    with pytest.raises(ResourceClosed, match="closed"):
        await api.get("/x")
    with pytest.raises(ResourceClosed, match="Cannot reopen"):
        await api.__aenter__()


async def test_stats_are_keyed_by_host() -> None:
    """The limits key on host and port; the snapshot names downstream, breaker and budget."""
    script = Script(200)
    async with _downstream(script) as api:
        await api.get("/x")
        await api.get("http://other.test:8080/y")
        stats = api.stats()
    assert set(stats.limits.keys) == {"api.test:80", "other.test:8080"}
    assert stats.name == stats.breaker.name == "api"
    assert stats.retry_budget.calls == 2


async def _hang(request: httpx.Request) -> httpx.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable: nobody sets the event")


async def test_deadline_ends_a_hanging_call_exactly() -> None:
    """A downstream that never answers costs the caller exactly its deadline."""
    async with Downstream(
        "api", "http://api.test", timeout=5.0, transport=httpx.MockTransport(_hang)
    ) as api:
        watch = Stopwatch()
        with pytest.raises(DeadlineExceeded):
            await _within(0.2, api.get("/x"))
    assert watch.elapsed == pytest.approx(0.2, abs=1e-9)


async def test_own_timeout_ends_a_hanging_call_exactly() -> None:
    """Without a deadline, a hanging call ends at the downstream's own timeout, exactly."""
    transport = httpx.MockTransport(_hang)
    async with Downstream("api", "http://api.test", timeout=0.2, transport=transport) as api:
        watch = Stopwatch()
        with pytest.raises(DownstreamTimeout, match=r"no answer within 0\.2s"):
            await api.get("/x")
    assert watch.elapsed == pytest.approx(0.2, abs=1e-9)  # a read timeout is not retried


async def test_waiting_for_a_slot_ends_a_margin_before_the_deadline() -> None:
    """With the only slot held by a hung call, the next caller gets LimitTimeout on time."""
    transport = httpx.MockTransport(_hang)
    limits = Limits(concurrency=1)
    async with (
        Downstream(
            "api", "http://api.test", limits=limits, timeout=5.0, transport=transport
        ) as api,
        asyncio.TaskGroup() as group,
    ):
        hung = group.create_task(api.get("/x"))
        await asyncio.sleep(0.1)  # virtual: the hung call has its slot by now
        watch = Stopwatch()
        with pytest.raises(LimitTimeout) as caught:
            await _within(0.2, api.get("/y"))
        hung.cancel()
    assert watch.elapsed == pytest.approx(0.2 - DEADLINE_MARGIN, abs=1e-9)
    assert caught.value.waited == pytest.approx(0.2 - DEADLINE_MARGIN, abs=1e-9)
    assert api.stats().limits.rejected == 1
