"""fan_out: required branches fail the call cleanly, optional ones degrade, none outlive it.

On virtual time: timeouts and ``within`` end exactly when they say.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import loopwise.patterns
from loopwise.patterns import DeadlineExceeded, fail_after, fan_out, optional, required, time_left
from loopwise.patterns.fanout import __all__ as fanout_all

pytestmark = pytest.mark.virtual_time


class _Probe:
    """A branch that starts, then waits forever, and records whether it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False
        self.task: asyncio.Task[object] | None = None

    async def __call__(self) -> str:
        self.task = asyncio.current_task()
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "never"


async def _value(value: object) -> object:
    return value


def test_exports_are_pinned() -> None:
    """The package exports fan_out's public names, and only those are public."""
    assert fanout_all == ["Branch", "FanOutResult", "fan_out", "optional", "required"]
    assert set(fanout_all) <= set(loopwise.patterns.__all__)


async def test_all_branches_succeed() -> None:
    """Every branch's value comes back under its name, and nothing degraded."""
    result = await fan_out(
        required("a", lambda: _value(1)),
        optional("b", lambda: _value("two"), fallback="none"),
    )
    assert result["a"] == 1
    assert result["b"] == "two"
    assert result.degraded == ()
    assert set(result.elapsed) == {"a", "b"}


async def test_typed_access_by_branch() -> None:
    """get_value returns the value of the branch object given."""
    branch = required("n", lambda: _value(41))
    result = await fan_out(branch)
    assert result.get_value(branch) == 41


async def test_failing_required_branch_cancels_siblings() -> None:
    """A required failure cancels running siblings and raises its own exception, not a group."""
    sibling_required, sibling_optional = _Probe(), _Probe()

    async def fail() -> None:
        await sibling_required.started.wait()
        await sibling_optional.started.wait()
        raise LookupError("profile missing")

    with pytest.raises(LookupError, match="profile missing") as caught:
        await fan_out(
            required("profile", fail),
            required("orders", sibling_required),
            optional("loyalty", sibling_optional, fallback=None),
        )
    assert sibling_required.cancelled
    assert sibling_optional.cancelled
    assert "in required fan-out branch 'profile'" in (caught.value.__notes__ or [])
    assert sibling_required.task is not None
    assert sibling_required.task.done()
    assert sibling_optional.task is not None
    assert sibling_optional.task.done()


async def test_slow_optional_branch_yields_fallback_at_its_timeout() -> None:
    """An optional branch past its timeout is cancelled and its fallback used, marked degraded."""
    slow = _Probe()
    result = await fan_out(
        required("profile", lambda: _value("me")),
        optional("loyalty", slow, fallback={"points": 0}, timeout=0.05),
    )
    assert result["profile"] == "me"
    assert result["loyalty"] == {"points": 0}
    assert result.degraded == ("loyalty",)
    assert result.reasons == {"loyalty": "timeout"}
    assert slow.cancelled
    assert result.elapsed["loyalty"] == pytest.approx(0.05, abs=1e-9)  # at its timeout, exactly


async def test_failing_optional_branch_degrades() -> None:
    """An optional branch raising yields its fallback and names the exception type."""

    async def broken() -> int:
        raise ConnectionError("downstream refused")

    result = await fan_out(
        required("profile", lambda: _value("me")),
        optional("shipments", broken, fallback=[]),
    )
    assert result["shipments"] == []
    assert result.degraded == ("shipments",)
    assert result.reasons == {"shipments": "ConnectionError"}


async def test_within_bounds_required_branch() -> None:
    """A required branch still running when `within` ends raises DeadlineExceeded."""
    slow = _Probe()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await fan_out(required("profile", slow), within=0.05)
    assert slow.cancelled
    assert loop.time() - started == pytest.approx(0.05, abs=1e-9)


async def test_within_lets_optional_fall_back_at_the_end() -> None:
    """An optional branch without a timeout of its own falls back when `within` ends."""
    slow = _Probe()
    result = await fan_out(
        required("profile", lambda: _value("me")),
        optional("loyalty", slow, fallback=None),
        within=0.05,
    )
    assert result.degraded == ("loyalty",)
    assert slow.cancelled
    assert result.elapsed["loyalty"] == pytest.approx(0.05, abs=1e-9)


async def test_branches_inherit_the_deadline_in_force() -> None:
    """Branches see the enclosing deadline, capped by their own timeout."""

    async def budget() -> float | None:
        return time_left()

    async with fail_after(30.0):
        result = await fan_out(
            required("outer", budget),
            optional("own", budget, fallback=None, timeout=1.0),
        )
    assert (result["outer"], result["own"]) == (30.0, 1.0)  # virtual time: none spent yet


async def test_no_task_outlives_the_call() -> None:
    """When fan_out returns or raises, every task it started has finished."""
    probes = [_Probe(), _Probe()]
    before = asyncio.all_tasks()

    async def fail() -> None:
        await asyncio.gather(*(p.started.wait() for p in probes))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fan_out(
            required("fail", fail),
            required("p0", probes[0]),
            optional("p1", probes[1], fallback=None),
        )
    assert all(p.task is not None and p.task.done() for p in probes)
    assert asyncio.all_tasks() == before


async def test_cancelling_the_caller_cancels_every_branch() -> None:
    """Cancelling the task awaiting fan_out cancels its branches before it ends."""
    probes = [_Probe(), _Probe()]
    caller = asyncio.create_task(
        fan_out(required("a", probes[0]), optional("b", probes[1], fallback=None))
    )
    await asyncio.gather(*(p.started.wait() for p in probes))
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert all(p.cancelled for p in probes)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fan_out(), "at least one"),
        (
            lambda: fan_out(required("a", lambda: _value(1)), required("a", lambda: _value(2))),
            "distinct",
        ),
        (lambda: fan_out(required("a", lambda: _value(1)), within=0), "within"),
        (lambda: fan_out(optional("a", lambda: _value(1), fallback=0, timeout=-1)), "timeout"),
    ],
)
async def test_arguments_are_checked(call: Callable[[], Awaitable[object]], message: str) -> None:
    """Bad arguments are refused with a message naming the parameter."""
    with pytest.raises(ValueError, match=message):
        await call()
