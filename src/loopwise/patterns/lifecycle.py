"""The lifecycle of every resource that holds connections, threads or tasks.

A resource is opened once and closed once; it never goes back (httpx's ``ClientState``:
"Cannot reopen a client instance, once it has been closed"). Each one tracks where it is
with this enum and refuses work outside ``OPENED``.
"""

from __future__ import annotations

import abc
import enum
from types import TracebackType

__all__ = ["AsyncResource", "ResourceState"]


class AsyncResource(abc.ABC):
    """An async context manager whose exit is :meth:`aclose` (anyio's ``AsyncResource``).

    Subclasses write ``__aenter__`` (what opening means differs) and ``aclose``.
    """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release everything held; safe to call more than once."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class ResourceState(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3
