"""Password hashing with argon2id, off the event loop, on a bounded pool of processes.

    async with Passwords.from_settings(settings) as passwords:
        stored = await passwords.hash("correct horse battery staple")
        ok = await passwords.verify(stored, attempt)

An argon2id hash is tens of milliseconds of CPU and ``argon2_memory_kib`` of memory
(64 MiB by default). On the event loop it would stall every other request, so each hash
runs on a pool sized to the cores: more workers would only share the same cores and
multiply the memory. When the pool and its queue are full, callers get 503 with
``Retry-After`` instead of waiting without bound.

Off the loop is not enough on a busy machine: one hash with ``parallelism=4`` runs four
threads flat out, and on two cores the scheduler then gives the event loop a fifth of a
core (the benchmark measured 100 ms of loop lag during a registration storm). So on Linux
the hashing workers lower their own priority (``password_hash_priority``; argon2's lane
threads inherit it). The default, ``idle`` (``SCHED_IDLE``), lets the event loop take the
CPU from them the moment it wakes up.

And the workers are processes (``password_hash_isolation``, the default ``process``): a
hashing *thread* needs the GIL at the start and end of each hash, and at ``SCHED_IDLE`` on
busy cores it may hold the loop waiting for that hand-over for tens of milliseconds (a
priority inversion; docs/operations/passwords.md has the figures). A process has its own
GIL; the loop's side only waits on a pipe. A hashing process that dies fails its callers
with 503 and is replaced by the next call. ``thread`` saves the processes' memory.

The trade-off: hashing gets only CPU time nothing else wants, so when the cores stay busy,
registrations and logins slow down (the benchmark's storm beside 1,000 reads/s still
registered; see docs/operations/passwords.md). Their wait is bounded: past
``password_hash_queue`` waiting callers the next gets 503 at once, and a caller with a
deadline waits only within it. An operator who prefers hashing to keep a guaranteed share
sets ``nice:N`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Annotated, ParamSpec, TypeVar

from argon2.exceptions import InvalidHashError
from pydantic import AfterValidator, Field

from loopwise.patterns.deadlines import fail_after
from loopwise.patterns.exceptions import DeadlineExceeded, Saturated
from loopwise.patterns.lifecycle import AsyncResource
from loopwise.patterns.offload import BlockingPool, CpuPool
from loopwise.service.exceptions import Unavailable
from loopwise.service.identity.hashing import (
    HashParams,
    hash_password,
    start_process,
    verify_password,
)
from loopwise.service.logs import get_logger
from loopwise.service.priority import Applied, ThreadPriority
from loopwise.service.settings import HashIsolation, Settings

__all__ = ["NewPassword", "Passwords"]

P = ParamSpec("P")
T = TypeVar("T")

_log = get_logger("loopwise.passwords")
_UNCHANGED = ThreadPriority()  # nice:0, the threads as they start

# NIST SP 800-63B: at least 8 characters, allow at least 64, no composition rules.
# 128 bounds the work a hostile client can make us hash per request.
_MIN_LENGTH, _MAX_LENGTH = 8, 128


def _not_trivial(value: str) -> str:
    if not value.strip():
        raise ValueError("password must not be only whitespace")
    if len(set(value)) < 3:
        raise ValueError("password must use at least 3 different characters")
    return value


NewPassword = Annotated[
    str,
    Field(
        min_length=_MIN_LENGTH,
        max_length=_MAX_LENGTH,
        # The schema cannot express the last two rules; the description is the contract.
        description="8 to 128 characters, not only whitespace, and at least 3 different "
        "characters (`aaaaaaaa` and `abababab` are refused with 422).",
    ),
    AfterValidator(_not_trivial),
]
"""A password a user may choose: 8 to 128 characters, not trivially repetitive."""


class Passwords(AsyncResource):
    """argon2id hashing and verification on a bounded pool of processes or threads."""

    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        workers: int,
        queue: int,
        priority: ThreadPriority = _UNCHANGED,
        deadline: float = 10.0,
        isolation: HashIsolation = "thread",
    ) -> None:
        if deadline <= 0:
            raise ValueError(f"`deadline` must be positive, got {deadline}")
        self._deadline = deadline
        self._fell_back = False
        self._params = HashParams(time_cost, memory_kib, parallelism, priority)
        self._pool: BlockingPool | CpuPool = (
            CpuPool("argon2", max_workers=workers, max_queue=queue, initializer=start_process)
            if isolation == "process"
            else BlockingPool("argon2", max_workers=workers, max_queue=queue)
        )
        self._dummy_hash: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        return cls(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            workers=settings.password_hash_threads,
            queue=settings.password_hash_queue,
            priority=settings.password_hash_priority,
            deadline=settings.password_hash_deadline,
            isolation=settings.password_hash_isolation,
        )

    @property
    def pool(self) -> BlockingPool | CpuPool:
        """The pool the hashes run on, for its stats."""
        return self._pool

    async def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (PHC string, salt and parameters included).

        Raises:
            Unavailable: every worker is busy and the queue is full, the hash was not
                done within the deadline, or the process hashing it died.
        """
        return await self._run(hash_password, self._params, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``, in constant time.

        With ``stored=None`` (no such user) it verifies against a dummy hash made with the
        same parameters, so the answer and the time taken are those of a wrong password.
        """
        if stored is None:
            await self._run(verify_password, self._params, self._require_dummy(), password)
            return False
        return await self._run(verify_password, self._params, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters than the configured ones."""
        try:
            return self._params.hasher().check_needs_rehash(stored)
        except InvalidHashError:
            return True

    async def _run(
        self, fn: Callable[P, tuple[T, Applied]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        self._check_open()
        try:
            # Bounded in time as well as in callers: at a low priority a hash may wait long
            # for a core while the service is saturated, and no client should wait with it.
            async with fail_after(self._deadline):
                result, applied = await self._pool.run(fn, *args, **kwargs)
        except (Saturated, DeadlineExceeded, BrokenProcessPool):
            # Shed rather than queue without bound: the client retries, the loop stays free.
            # (A hash already running finishes in its worker; nothing was written yet. A
            # hashing process that died, say to the OOM killer, is replaced by the next call.)
            raise Unavailable(
                "Password hashing is at capacity; retry shortly.", retry_after=1
            ) from None
        self._note(applied)
        return result

    def _note(self, applied: Applied) -> None:
        if applied == "fallback" and not self._fell_back:
            self._fell_back = True
            _log.warning(
                "password_hash_priority_fallback",
                wanted=str(self._params.priority),
                used="nice:19",
                reason="SCHED_IDLE refused by the kernel or a seccomp profile",
            )

    def _require_dummy(self) -> str:
        self._check_open()
        assert self._dummy_hash is not None  # made by _aopen
        return self._dummy_hash

    @property
    def resource_name(self) -> str:
        return "password hasher"

    async def _aopen(self) -> None:
        await self._pool.open()
        try:
            # Hashed once at start-up, off the loop, with the configured parameters, so that
            # a login for an unknown email costs exactly what a wrong password costs. No
            # client waits on it, so not under their deadline: on a starved machine the
            # low-priority pool makes start-up slower, not fail.
            # In a process pool, this first call also starts the hashing process.
            hashed, applied = await self._pool.run(
                hash_password, self._params, "loopwise-no-such-user"
            )
            self._note(applied)
            self._dummy_hash = hashed
        except BaseException:
            await self._pool.aclose()
            raise

    async def _aclose(self) -> None:
        await self._pool.aclose()
