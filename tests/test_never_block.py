"""Never block the event loop: the detector fails the suite, the watchdog names the culprit."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import structlog
from asgi_lifespan import LifespanManager
from blockbuster import BlockBuster, BlockingError

from loopwise.service.app import create_app
from loopwise.service.settings import InvalidSettings, Settings, load_settings
from tests.service.http.test_metrics import value


async def test_blocking_detector_is_active() -> None:
    """A blocking call in async code raises BlockingError under the autouse detector."""
    with pytest.raises(BlockingError, match=r"time\.sleep"):
        time.sleep(0.001)  # noqa: ASYNC251  # the point: the detector must catch it


class WatchdogLogs:
    """The watchdog's structlog events, forwarded to the test's loop; flags the test's stall."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.stalled = threading.Event()
        self._loop = loop

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        if event.get("logger_name") == "loopwise.watchdog":
            # Only the stall the test causes: a hiccup of a busy machine logged earlier
            # would otherwise end hold_the_loop before the watchdog saw it block.
            if event["event"] == "event_loop_stalled" and "in hold_the_loop\n" in event.get(
                "stack", ""
            ):
                self.stalled.set()
            self._loop.call_soon_threadsafe(self.queue.put_nowait, dict(event))  # renderers pop
        return event


@contextmanager
def watchdog_logs() -> Iterator[WatchdogLogs]:
    """Tap structlog's processor chain in place (as structlog.testing.capture_logs does)."""
    tap = WatchdogLogs(asyncio.get_running_loop())
    processors = structlog.get_config()["processors"]
    processors.insert(0, tap)
    try:
        yield tap
    finally:
        processors.remove(tap)


def hold_the_loop(stalled: threading.Event) -> None:
    """Block the calling thread, the loop's, until the watchdog has reported the stall."""
    give_up = time.monotonic() + 30
    while not stalled.is_set() and time.monotonic() < give_up:
        time.sleep(0.005)


@pytest.mark.blocks_loop
@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])
async def test_watchdog_names_a_blocking_handler(
    settings: Settings, blockbuster: BlockBuster
) -> None:
    """A handler that blocks the loop is logged once with its stack; /metrics shows the lag."""
    blockbuster.functions["time.sleep"].can_block_in(__file__, "hold_the_loop")
    tuned = settings.model_copy(update={"watchdog_threshold": 0.2, "watchdog_interval": 0.02})
    application = create_app(tuned)
    with watchdog_logs() as logs:

        async def blocking_handler() -> dict[str, str]:
            hold_the_loop(logs.stalled)
            return {"status": "done"}

        application.add_api_route("/test-only/block", blocking_handler)
        async with LifespanManager(application) as manager:
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/test-only/block")).status_code == 200
                # A hiccup of the shared test machine may be logged first: skip to ours.
                stalled = await logs.queue.get()
                while "in hold_the_loop\n" not in stalled.get("stack", ""):
                    stalled = await logs.queue.get()
                ended = await logs.queue.get()
                text = (await client.get("/metrics")).text
    assert stalled["event"] == "event_loop_stalled"
    assert "in hold_the_loop\n" in stalled["stack"]
    assert "in blocking_handler\n" in stalled["stack"]
    assert ended["event"] == "event_loop_stall_ended"
    assert ended["duration_ms"] >= 200.0
    assert value(text, "loopwise_event_loop_stalls_total") >= 1
    assert value(text, "loopwise_event_loop_lag_seconds_sum") >= 0.2
    assert value(text, "loopwise_event_loop_lag_seconds_bucket", le="0.1") < value(
        text, "loopwise_event_loop_lag_seconds_bucket", le="+Inf"
    )


@pytest.mark.parametrize(
    ("field", "bad", "variable"),
    [
        ("watchdog_threshold", 0, "LOOPWISE_WATCHDOG_THRESHOLD"),
        ("blocking_workers", 0, "LOOPWISE_BLOCKING_WORKERS"),
        ("blocking_queue", -1, "LOOPWISE_BLOCKING_QUEUE"),
    ],
)
def test_off_loop_settings_are_validated(field: str, bad: int, variable: str) -> None:
    """A nonsense watchdog or pool setting stops start-up with a line naming the variable."""
    with pytest.raises(InvalidSettings, match=variable):
        load_settings(**{field: bad}, _env_file=None)


async def test_startup_objects_are_exempt_from_full_collections(settings: Settings) -> None:
    """While the app runs, what start-up built sits in the collector's permanent generation.

    A full collection then walks only what was made since, instead of stopping the loop for
    ~100 ms; shutdown hands the objects back.
    """
    assert gc.get_freeze_count() == 0
    async with LifespanManager(create_app(settings)):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
