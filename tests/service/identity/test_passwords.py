"""argon2id off the event loop: hashing, verification, shedding when saturated."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from loopwise.patterns import ResourceClosed
from loopwise.service.exceptions import Unavailable
from loopwise.service.identity.passwords import Passwords
from loopwise.service.priority import ThreadPriority
from loopwise.service.settings import Settings
from tests.patterns import cpu_work

CHEAP: dict[str, Any] = {"time_cost": 1, "memory_kib": 64, "parallelism": 1}


@pytest.fixture
async def passwords() -> AsyncIterator[Passwords]:
    async with Passwords(**CHEAP, workers=1, queue=0) as hasher:
        yield hasher


async def test_hash_and_verify(passwords: Passwords) -> None:
    """A hash verifies its password and no other; hashes are salted."""
    stored = await passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify(stored, "correct horse")
    assert not await passwords.verify(stored, "wrong horse")
    assert stored != await passwords.hash("correct horse")


async def test_unknown_user_verifies_against_a_dummy(passwords: Passwords) -> None:
    """Verifying with no stored hash still hashes, and answers False."""
    before = passwords.pool.stats().completed
    assert not await passwords.verify(None, "anything at all")
    assert passwords.pool.stats().completed == before + 1


async def test_garbage_hash_never_matches(passwords: Passwords) -> None:
    """A corrupt stored hash is a mismatch, not an error."""
    assert not await passwords.verify("not-a-phc-string", "x")
    assert passwords.needs_rehash("not-a-phc-string")


async def test_rehash_when_parameters_change(passwords: Passwords) -> None:
    """A hash made with other cost parameters asks to be upgraded."""
    stored = await passwords.hash("pw pw pw")
    assert not passwords.needs_rehash(stored)
    async with Passwords(time_cost=2, memory_kib=64, parallelism=1, workers=1, queue=0) as other:
        assert other.needs_rehash(stored)


async def test_saturated_pool_sheds_with_503(passwords: Passwords) -> None:
    """With every worker busy and no queue, hashing fails fast as 503 with Retry-After."""
    loop = asyncio.get_running_loop()
    started, release = asyncio.Event(), threading.Event()

    def hold_the_worker() -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait()

    occupied = asyncio.create_task(passwords.pool.run(hold_the_worker))
    await started.wait()
    try:
        with pytest.raises(Unavailable) as caught:
            await passwords.hash("x" * 10)
        assert caught.value.headers["Retry-After"] == "1"
    finally:
        release.set()
        await occupied


async def test_a_hash_not_done_within_the_deadline_sheds_with_503() -> None:
    """A caller stops waiting at the deadline, queued or not, and gets 503 + Retry-After."""
    loop = asyncio.get_running_loop()
    started, release = asyncio.Event(), threading.Event()

    def hold_the_worker() -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait()

    async with Passwords(**CHEAP, workers=1, queue=4, deadline=0.2) as hasher:
        occupied = asyncio.create_task(hasher.pool.run(hold_the_worker))
        await started.wait()
        try:
            with pytest.raises(Unavailable) as caught:
                await hasher.hash("x" * 10)  # queued behind the held worker until 0.2 s
            assert caught.value.headers["Retry-After"] == "1"
        finally:
            release.set()
            await occupied
        assert await hasher.verify(await hasher.hash("y" * 10), "y" * 10)
    with pytest.raises(ValueError, match="`deadline`"):
        Passwords(**CHEAP, workers=1, queue=0, deadline=0)


async def test_refuses_use_after_close() -> None:
    """A closed hasher refuses work and cannot be reopened."""
    hasher = Passwords(**CHEAP, workers=1, queue=0)
    async with hasher:
        pass
    with pytest.raises(ResourceClosed):
        await hasher.hash("whatever1")
    with pytest.raises(ResourceClosed):
        await hasher.open()


def _scheduling() -> tuple[int, int, int]:
    """This thread's id, scheduling policy and nice value (Linux: all per thread)."""
    tid = threading.get_native_id()
    return tid, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.parametrize(
    ("setting", "policy", "nice"),
    [("idle", os.SCHED_IDLE, 0), ("nice:7", os.SCHED_OTHER, 7), ("nice:0", os.SCHED_OTHER, 0)],
)
async def test_hashes_run_off_the_loop_at_the_configured_priority(
    settings: Settings, setting: str, policy: int, nice: int
) -> None:
    """The setting reaches the thread that hashes; the loop's thread keeps its own priority."""
    loop_thread = _scheduling()
    configured = settings.model_copy(
        update={
            "password_hash_priority": ThreadPriority.parse(setting),
            "password_hash_workers": 1,  # one thread: the one that hashed is the one we read
        }
    )
    async with Passwords.from_settings(configured) as hasher:
        stored = await hasher.hash("correct horse")
        assert await hasher.verify(stored, "correct horse")
        worker = await hasher.pool.run(_scheduling)
    assert worker[0] != loop_thread[0]
    assert worker[1:] == (policy, nice)
    assert _scheduling() == loop_thread


async def test_start_up_hash_is_not_bound_by_the_request_deadline() -> None:
    """Opening hashes the unknown-user dummy without the clients' deadline: a starved,
    low-priority pool makes start-up slower, never fail."""
    async with Passwords(**CHEAP, workers=1, queue=0, deadline=1e-9) as hasher:
        with pytest.raises(Unavailable):
            await hasher.hash("x" * 10)  # a client's hash still sheds at the deadline


@pytest.fixture
async def in_processes(settings: Settings) -> AsyncIterator[Passwords]:
    """As `loopwise serve` hashes: in a process of its own, at SCHED_IDLE."""
    configured = settings.model_copy(
        update={
            "password_hash_isolation": "process",
            "password_hash_priority": ThreadPriority(idle=True),
            "password_hash_workers": 1,  # one process: the one that hashed is the one we read
        }
    )
    async with Passwords.from_settings(configured) as hasher:
        yield hasher


async def test_hashes_run_in_a_process_of_their_own_at_idle_priority(
    in_processes: Passwords,
) -> None:
    """Another process hashes, at SCHED_IDLE: it shares no GIL with the loop, and the
    loop's thread never waits for a starved low-priority thread to hand the GIL back."""
    stored = await in_processes.hash("correct horse")
    assert await in_processes.verify(stored, "correct horse")
    assert not await in_processes.verify(stored, "wrong horse")
    assert not await in_processes.verify(None, "anything")
    hashing_pid, policy, _ = await in_processes.pool.run(cpu_work.scheduling)
    assert hashing_pid != os.getpid()
    assert policy == os.SCHED_IDLE
    assert _scheduling()[1] == os.SCHED_OTHER  # the loop's thread is left as it was


async def test_a_killed_hashing_process_costs_its_callers_a_503_then_is_replaced(
    in_processes: Passwords,
) -> None:
    """The OOM killer takes the hashing process: its caller gets 503 + Retry-After, the
    next call is hashed by a new process."""
    first = await in_processes.pool.run(cpu_work.pid)
    os.kill(first, signal.SIGKILL)
    # Whether the pool noticed the death before this call or while it waited, it fails.
    with pytest.raises(Unavailable) as refused:
        await in_processes.hash("correct horse")
    assert refused.value.headers["Retry-After"] == "1"
    assert (await in_processes.hash("correct horse")).startswith("$argon2id$")
    assert await in_processes.pool.run(cpu_work.pid) != first
