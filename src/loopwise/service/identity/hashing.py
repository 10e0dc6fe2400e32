"""argon2id as the hashing processes (or threads) run it, at the configured priority.

    params = HashParams(time_cost=3, memory_kib=65536, parallelism=4, priority=idle)
    stored, applied = hash_password(params, "correct horse battery staple")
    ok, applied = verify_password(params, stored, attempt)

These functions are what :class:`~loopwise.service.identity.passwords.Passwords` sends to
its pool. In a process pool they run in fresh interpreters (``spawn``), so this module
imports argon2 and the priority rule and nothing of the service. Each call first gives
the calling thread ``params.priority`` (one system call the first time, a check after),
and returns what it got, so the service can say once when ``SCHED_IDLE`` was refused.
"""

from __future__ import annotations

import functools
import signal
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from loopwise.service.priority import Applied, ThreadPriority

__all__ = ["HashParams", "hash_password", "start_process", "verify_password"]


def start_process() -> None:
    """A hashing process's start: Ctrl-C is for the server, which ends its pool itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True, slots=True)
class HashParams:
    """argon2id's cost parameters and the priority to hash at (they pickle: plain values)."""

    time_cost: int
    memory_kib: int
    parallelism: int
    priority: ThreadPriority

    def hasher(self) -> argon2.PasswordHasher:
        return _hasher(self)


# One hasher per parameter set, per process: a process or thread hashes for one service.
@functools.cache
def _hasher(params: HashParams) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        type=argon2.Type.ID,
    )


def hash_password(params: HashParams, password: str) -> tuple[str, Applied]:
    """The PHC string of ``password``, and the priority it was hashed at."""
    applied = params.priority.apply()
    return params.hasher().hash(password), applied


def verify_password(params: HashParams, stored: str, password: str) -> tuple[bool, Applied]:
    """Whether ``password`` matches ``stored`` (False for a malformed one), and the priority."""
    applied = params.priority.apply()
    try:
        return params.hasher().verify(stored, password), applied
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, applied
