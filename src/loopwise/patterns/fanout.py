"""Structured fan-out: run named branches concurrently, all finished when the call returns.

    result = await fan_out(
        required("account", load_account),                              # must succeed
        optional("loyalty", fetch_loyalty, fallback=None, timeout=0.2),  # may degrade
        within=1.0,                                                      # the whole call
    )
    account, loyalty = result["account"], result["loyalty"]
    result.degraded  # ("loyalty",) when it failed or ran out of time

- A **required** branch that fails cancels its siblings, and ``fan_out`` raises that
  branch's own exception (not an ``ExceptionGroup``), with a note naming the branch.
- An **optional** branch that fails or times out yields its ``fallback``; its name is
  listed in ``degraded`` and the reason in ``reasons``. That list is the one place a
  caller learns what fell back. :class:`ResourceClosed` is the exception: a resource
  used outside its lifetime is a bug, not a degraded part, so it fails the call.
- Every branch is bounded by its own ``timeout``, by ``within`` and by the deadline in
  force (:mod:`loopwise.patterns.deadlines`), whichever ends first. A required branch out
  of time raises :class:`DeadlineExceeded`.
- No branch outlives the call: they run in one ``asyncio.TaskGroup``.

Fan out across different resources (PostgreSQL and two HTTP services), not several queries
to the same PostgreSQL: one round trip with a fused query beats three pooled connections.

Inside a recorded trace each branch runs in a span of its own (``fan_out loyalty``):
whether it is required, its budget in seconds, and whether it degraded, why, and to what.

``within`` bounds the branches themselves, so an optional branch can still fall back at
the very end of the budget. A caller's enclosing ``fail_after()`` that expires at the same
instant cancels the call as a whole instead; give the request's budget as ``within``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry import trace

from loopwise.patterns.deadlines import current_deadline, fail_after
from loopwise.patterns.exceptions import DeadlineExceeded, ResourceClosed

__all__ = ["Branch", "FanOutResult", "fan_out", "optional", "required"]

T = TypeVar("T")

# The global API's tracer: a no-op until an application installs an SDK provider.
_tracer = trace.get_tracer("loopwise.patterns")


@dataclass(frozen=True, slots=True)
class Branch(Generic[T]):
    """One named unit of work; build it with :func:`required` or :func:`optional`."""

    name: str
    run: Callable[[], Awaitable[T]]
    is_required: bool
    timeout: float | None = None
    fallback: T | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("`name` must not be empty")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"`timeout` must be positive, got {self.timeout}")


def required(
    name: str, run: Callable[[], Awaitable[T]], *, timeout: float | None = None
) -> Branch[T]:
    """A branch whose failure fails the whole fan-out and cancels its siblings."""
    return Branch(name, run, is_required=True, timeout=timeout)


def optional(
    name: str, run: Callable[[], Awaitable[T]], *, fallback: T, timeout: float | None = None
) -> Branch[T]:
    """A branch whose failure or timeout yields ``fallback`` and marks it degraded."""
    return Branch(name, run, is_required=False, timeout=timeout, fallback=fallback)


@dataclass(frozen=True, slots=True)
class FanOutResult:
    """Each branch's value by name (fallbacks included), and which branches degraded.

    Attributes:
        degraded: names of optional branches that yielded their fallback, in call order.
        reasons: why each degraded branch did (``"timeout"`` or the exception's type name).
        elapsed: seconds each branch ran, by name.
    """

    values: Mapping[str, Any]
    degraded: tuple[str, ...] = ()
    reasons: Mapping[str, str] = field(default_factory=dict)
    elapsed: Mapping[str, float] = field(default_factory=dict)

    def get_value(self, branch: Branch[T]) -> T:
        """The value of ``branch``, typed as the branch is."""
        value: T = self.values[branch.name]
        return value

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


async def fan_out(*branches: Branch[Any], within: float | None = None) -> FanOutResult:
    """Run ``branches`` concurrently and return when every one has finished.

    Args:
        branches: at least one, with distinct names.
        within: seconds for the whole call; the deadline in force still applies if sooner.

    Raises:
        DeadlineExceeded: a required branch ran out of time.
        ResourceClosed: any branch, optional too, used a resource outside its lifetime.
        Exception: the first failing required branch's own exception.
    """
    names = [b.name for b in branches]
    if not branches:
        raise ValueError("`branches` must name at least one branch")
    if len(set(names)) != len(names):
        raise ValueError(f"branch names must be distinct, got {names}")
    if within is not None and not within > 0:
        raise ValueError(f"`within` must be positive, got {within}")

    loop = asyncio.get_running_loop()
    # One absolute end for the call. The parent task gets no timeout of its own: each
    # branch is bounded by it, so the group ends by then and optional branches can still
    # fall back at the last moment instead of being torn down with the whole call.
    in_force = current_deadline()
    end = math.inf if within is None else loop.time() + within
    if in_force is not None:
        end = min(end, in_force.at)

    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    elapsed: dict[str, float] = {}
    failures: list[BaseException] = []
    failed: set[str] = set()
    # Spans only inside a recorded trace: untraced, a branch costs one context lookup more.
    traced = trace.get_current_span().is_recording()

    async def run(branch: Branch[Any]) -> None:
        started = loop.time()
        budget = end - started
        if branch.timeout is not None:
            budget = min(budget, branch.timeout)
        if not traced:
            await attempt(branch, started, budget)
            return
        with _tracer.start_as_current_span(
            f"fan_out {branch.name}",
            attributes={
                "loopwise.branch.required": branch.is_required,
                "loopwise.branch.budget_s": budget if math.isfinite(budget) else -1.0,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await attempt(branch, started, budget)
            finally:
                _annotate(span, branch, reasons.get(branch.name), branch.name in failed)

    async def attempt(branch: Branch[Any], started: float, budget: float) -> None:
        try:
            if math.isinf(budget):
                values[branch.name] = await branch.run()
            else:
                async with fail_after(max(0.0, budget)):
                    values[branch.name] = await branch.run()
        except Exception as exc:
            if branch.is_required or isinstance(exc, ResourceClosed):
                kind = "required" if branch.is_required else "optional"
                exc.add_note(f"in {kind} fan-out branch {branch.name!r}")
                failures.append(exc)
                failed.add(branch.name)
                raise
            values[branch.name] = branch.fallback
            reasons[branch.name] = (
                "timeout" if isinstance(exc, DeadlineExceeded) else type(exc).__name__
            )
        finally:
            elapsed[branch.name] = loop.time() - started

    first_failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            for branch in branches:
                group.create_task(run(branch), name=f"fan_out:{branch.name}")
    except BaseExceptionGroup as group_error:
        first_failure = failures[0] if failures else group_error.exceptions[0]
    if first_failure is not None:
        # The first required failure itself, raised outside the handler so its own cause
        # and context stay as the branch left them; callers never unpack a group.
        raise first_failure

    degraded = tuple(name for name in names if name in reasons)
    return FanOutResult(
        values={name: values[name] for name in names},
        degraded=degraded,
        reasons=reasons,
        elapsed=elapsed,
    )


def _annotate(span: trace.Span, branch: Branch[Any], reason: str | None, failed: bool) -> None:
    """What became of ``branch``, on its span: degraded and why, or failed."""
    span.set_attribute("loopwise.branch.degraded", reason is not None)
    if reason is not None:
        span.set_attribute("loopwise.branch.reason", reason)
        span.add_event("fallback", {"reason": reason, "fallback": repr(branch.fallback)[:200]})
    elif failed:
        span.set_status(trace.StatusCode.ERROR)
