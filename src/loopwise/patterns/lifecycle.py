"""The lifecycle of every resource that holds connections, threads or tasks.

    class Pool(AsyncResource):
        async def _aopen(self) -> None:    # what opening means: connect, start threads
            ...
        async def _aclose(self) -> None:   # release what _aopen took; runs at most once
            ...
        async def run(self) -> None:
            self._check_open()             # ResourceClosed before opening and after closing
            ...

    async with Pool() as pool:             # opens; the exit closes
        ...

A resource is opened once and closed once; it never goes back (httpx's ``ClientState``:
"Cannot reopen a client instance, once it has been closed"). The template owns the state
and the rules, so every resource in the package and the service keeps them the same way:

- ``async with`` (or :meth:`AsyncResource.open`) opens it, once; a second open raises
  :class:`~loopwise.patterns.exceptions.ResourceClosed`.
- :meth:`AsyncResource.aclose` is idempotent, and safe on a resource never opened.
- Work refused outside ``OPENED`` raises the same ``ResourceClosed``.
"""

from __future__ import annotations

import abc
import enum
from types import TracebackType
from typing import Self

from loopwise.patterns.exceptions import ResourceClosed

__all__ = ["AsyncResource", "ResourceState"]


class ResourceState(enum.Enum):
    """Where a resource is in its one-way life: unopened, opened, closed."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


class AsyncResource(abc.ABC):
    """An async context manager with anyio's ``aclose()``, opened once and closed once.

    Subclasses write :meth:`_aopen` (optional) and :meth:`_aclose`, and call
    :meth:`_check_open` where they take work. ``resource_name`` names the resource in
    errors; it defaults to the class name.
    """

    _state: ResourceState = ResourceState.UNOPENED

    @property
    def resource_name(self) -> str:
        return type(self).__name__

    @property
    def state(self) -> ResourceState:
        return self._state

    async def open(self) -> None:
        """Open the resource: once only. If opening fails, it is closed for good.

        Raises:
            ResourceClosed: it was opened (or closed) before.
        """
        if self._state is not ResourceState.UNOPENED:
            raise ResourceClosed(
                self.resource_name,
                f"Cannot reopen {self.resource_name!r} once it has been opened or closed.",
            )
        # OPENED before _aopen runs: opening may start work that checks the state.
        self._state = ResourceState.OPENED
        try:
            await self._aopen()
        except BaseException:
            self._state = ResourceState.CLOSED
            raise

    async def aclose(self) -> None:
        """Release everything held. Idempotent; the resource stays closed."""
        if self._state is ResourceState.CLOSED:
            return
        opened = self._state is ResourceState.OPENED
        self._state = ResourceState.CLOSED
        if opened:
            await self._aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        """Raise :class:`ResourceClosed` unless the resource is open."""
        if self._state is not ResourceState.OPENED:
            raise ResourceClosed(
                self.resource_name,
                f"{self.resource_name!r} is {self._state.name.lower()}",
            )

    async def _aopen(self) -> None:  # noqa: B027 -- optional hook: many resources open on use
        """Take what the resource holds (connections, threads, tasks); nothing by default."""

    @abc.abstractmethod
    async def _aclose(self) -> None:
        """Release what :meth:`_aopen` took; runs at most once, only if opening succeeded."""
