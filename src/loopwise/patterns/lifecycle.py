"""The lifecycle of every resource that holds connections, threads or tasks.

A resource is opened once and closed once; it never goes back (httpx's ``ClientState``:
"Cannot reopen a client instance, once it has been closed"). Each one tracks where it is
with this enum and refuses work outside ``OPENED``.
"""

from __future__ import annotations

import enum

__all__ = ["ResourceState"]


class ResourceState(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3
