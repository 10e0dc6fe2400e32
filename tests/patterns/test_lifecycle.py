"""AsyncResource: opened once, closed once and idempotently, ResourceClosed otherwise."""

from __future__ import annotations

import pytest

from loopwise.patterns import AsyncResource, PatternError, ResourceClosed, ResourceState


class Probe(AsyncResource):
    """Counts what the template calls; fails to open when told to."""

    def __init__(self, *, fail_open: bool = False) -> None:
        self.opened = self.closed = 0
        self._fail_open = fail_open

    async def _aopen(self) -> None:
        self.opened += 1
        if self._fail_open:
            raise ConnectionError("refused")

    async def _aclose(self) -> None:
        self.closed += 1

    def work(self) -> str:
        self._check_open()
        return "done"


async def test_opens_once_and_closes_once() -> None:
    """`async with` opens and closes; closing again does nothing more."""
    probe = Probe()
    async with probe:
        assert probe.state is ResourceState.OPENED
        assert probe.work() == "done"
    await probe.aclose()
    assert (probe.opened, probe.closed, probe.state) == (1, 1, ResourceState.CLOSED)


async def test_refuses_work_before_opening_and_after_closing() -> None:
    """Work outside OPENED raises ResourceClosed, a PatternError, naming the state."""
    probe = Probe()
    with pytest.raises(ResourceClosed, match="'Probe' is unopened"):
        probe.work()
    async with probe:
        pass
    with pytest.raises(ResourceClosed, match="'Probe' is closed") as caught:
        probe.work()
    assert isinstance(caught.value, PatternError)
    assert caught.value.resource == "Probe"


async def test_never_reopens() -> None:
    """A second open, while open or after closing, raises ResourceClosed."""
    probe = Probe()
    async with probe:
        with pytest.raises(ResourceClosed, match="Cannot reopen"):
            await probe.open()
    with pytest.raises(ResourceClosed, match="Cannot reopen"):
        await probe.open()
    assert probe.opened == 1


async def test_closing_an_unopened_resource_releases_nothing() -> None:
    """aclose() before open() just closes it for good; _aclose has nothing to release."""
    probe = Probe()
    await probe.aclose()
    assert (probe.closed, probe.state) == (0, ResourceState.CLOSED)
    with pytest.raises(ResourceClosed):
        await probe.open()


async def test_a_failed_open_leaves_it_closed() -> None:
    """If opening fails, the error propagates and the resource is closed for good."""
    probe = Probe(fail_open=True)
    with pytest.raises(ConnectionError):
        await probe.open()
    assert probe.state is ResourceState.CLOSED
    await probe.aclose()
    assert probe.closed == 0  # _aopen cleans up after itself; _aclose is not called
