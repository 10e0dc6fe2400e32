"""The virtual-time loop the timing tests run on: jumps when idle, exact, real I/O intact."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytestmark = pytest.mark.virtual_time


async def test_an_hour_of_sleep_passes_at_once_and_exactly() -> None:
    """Sleeping an hour moves the loop's clock by exactly an hour; nothing really waits."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(3600)
    assert loop.time() - started == 3600


async def test_timers_fire_in_order_at_their_times() -> None:
    """Concurrent sleeps end in order of their times, each exactly on time."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    ended: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        ended.append((name, loop.time() - started))

    async with asyncio.TaskGroup() as group:
        for name, seconds in [("c", 0.3), ("a", 0.1), ("b", 0.2)]:
            group.create_task(sleeper(name, seconds))
    assert [name for name, _ in ended] == ["a", "b", "c"]
    assert [at for _, at in ended] == pytest.approx([0.1, 0.2, 0.3], abs=1e-9)


async def test_the_clock_jumps_past_a_blocked_thread() -> None:
    """A thread blocked on the test does not hold the clock: a timeout still ends on time."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    waiting = asyncio.ensure_future(asyncio.to_thread(release.wait, 60))
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5.0):
            await asyncio.shield(waiting)
    assert loop.time() - started == 5.0
    release.set()
    assert await waiting is True


async def test_loopback_io_still_works() -> None:
    """A real socket pair on the virtual loop exchanges bytes as usual."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        writer.close()
        await writer.wait_closed()
