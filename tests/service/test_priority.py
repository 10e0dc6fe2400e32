"""Thread priority for background CPU work: parsing, the setting, and applying it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from loopwise.service.priority import ThreadPriority
from loopwise.service.settings import InvalidSettings, load_settings

T = TypeVar("T")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("idle", ThreadPriority(idle=True)),
        (" IDLE ", ThreadPriority(idle=True)),
        ("nice:0", ThreadPriority()),
        ("nice:10", ThreadPriority(nice=10)),
        ("Nice: 19", ThreadPriority(nice=19)),
    ],
)
def test_parse_accepts_idle_and_nice(text: str, expected: ThreadPriority) -> None:
    """'idle' and 'nice:N' for N in 0..19 parse, whatever their case and spacing."""
    assert ThreadPriority.parse(text) == expected
    assert ThreadPriority.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "low", "nice", "nice:", "nice:20", "nice:-1", "idle:3"])
def test_parse_rejects_anything_else(text: str) -> None:
    """Anything else is refused with the rule in the message."""
    with pytest.raises(ValueError, match=r"must be 'idle' or 'nice:N' with N from 0 to 19"):
        ThreadPriority.parse(text)


def test_setting_is_read_as_plain_text_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOOPWISE_PASSWORD_HASH_PRIORITY is plain text (not JSON) and a bad value names itself."""
    monkeypatch.delenv("LOOPWISE_PASSWORD_HASH_PRIORITY", raising=False)
    assert load_settings(_env_file=None).password_hash_priority == ThreadPriority(idle=True)
    monkeypatch.setenv("LOOPWISE_PASSWORD_HASH_PRIORITY", "nice:10")
    assert load_settings(_env_file=None).password_hash_priority == ThreadPriority(nice=10)
    monkeypatch.setenv("LOOPWISE_PASSWORD_HASH_PRIORITY", "nice:20")
    with pytest.raises(InvalidSettings, match=r"LOOPWISE_PASSWORD_HASH_PRIORITY: .*'idle'"):
        load_settings(_env_file=None)


def _in_new_thread(call: Callable[[], T]) -> T:
    results: list[T] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    thread.join()
    return results[0]


def _lowered(priority: ThreadPriority) -> tuple[str, int, int]:
    applied = priority.apply()
    tid = threading.get_native_id()
    return applied, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, tid)


def test_idle_puts_only_the_calling_thread_in_sched_idle() -> None:
    """'idle' makes the calling thread SCHED_IDLE and leaves the process's other threads be."""
    applied, policy, _ = _in_new_thread(lambda: _lowered(ThreadPriority(idle=True)))
    assert (applied, policy) == ("idle", os.SCHED_IDLE)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_nice_raises_only_the_calling_threads_nice_value() -> None:
    """'nice:7' gives the calling thread nice 7, under the normal policy; others keep theirs."""
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    applied, policy, nice = _in_new_thread(lambda: _lowered(ThreadPriority(nice=7)))
    assert (applied, policy, nice) == ("nice", os.SCHED_OTHER, 7)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_nice_zero_changes_nothing() -> None:
    """'nice:0' leaves the thread as it was."""
    applied, policy, nice = _in_new_thread(lambda: _lowered(ThreadPriority()))
    assert (applied, policy, nice) == ("unchanged", os.SCHED_OTHER, 0)
