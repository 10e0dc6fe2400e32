"""One process of the shared-limits tests: drives a downstream through ``Downstream`` hard.

    python tests/patterns/shared_driver.py REDIS_URL DOWNSTREAM_URL '{"workers": 20, ...}'

Builds a :class:`RedisStore`, :class:`RedisLimits` and :class:`SharedBreaker` as a user of
the toolkit would, prints ``ready``, waits for a line on stdin (so the test starts every
process at once, however slowly each started up), then runs ``workers`` callers in a loop
for ``seconds``. Prints one JSON object at the end: calls by outcome, breaker and store
transitions with wall-clock times, and the latency of every call. The options are read
from the JSON argument (see ``_OPTIONS``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from loopwise.patterns import (
    Downstream,
    Limits,
    RedisLimits,
    RedisStore,
    Retries,
    SharedBreaker,
    fail_after,
)

_OPTIONS: dict[str, Any] = {
    "workers": 10,
    "seconds": 3.0,
    "path": "/work",
    "concurrency": 10,
    "rate": None,
    "lease": 10.0,
    "instances": 3,
    "store_timeout": 0.05,
    "call_timeout": 5.0,
    "deadline": 10.0,
    "min_calls": 20,
    "cool_down": 5.0,
    "pause": 0.0,
}


async def main(redis_url: str, url: str, options: dict[str, Any]) -> dict[str, Any]:
    events: list[tuple[float, str, str]] = []
    outcomes: dict[str, int] = {}
    latencies: list[float] = []

    def on_mode(shared: bool, reason: str) -> None:
        events.append((time.time(), "shared" if shared else "fallback", reason))

    def on_breaker(name: str, old: Any, new: Any) -> None:
        events.append((time.time(), "breaker", new.value))

    store = RedisStore.from_url(
        redis_url,
        timeout=options["store_timeout"],
        instances=options["instances"],
        on_mode_change=on_mode,
    )
    async with store:
        limits = RedisLimits(
            store,
            "drive",
            Limits(concurrency=options["concurrency"], rate=options["rate"]),
            lease=options["lease"],
        )
        breaker = SharedBreaker(
            store,
            "drive",
            min_calls=options["min_calls"],
            cool_down=options["cool_down"],
            on_state_change=on_breaker,
        )
        async with Downstream(
            "drive",
            url,
            timeout=options["call_timeout"],
            limits=limits,
            retry=Retries(attempts=1),
            breaker=breaker,
        ) as downstream:
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            await asyncio.to_thread(sys.stdin.readline)
            events.append((time.time(), "started", ""))
            end = time.monotonic() + options["seconds"]

            async def work() -> None:
                while time.monotonic() < end:
                    start = time.monotonic()
                    try:
                        async with fail_after(options["deadline"]):
                            response = await downstream.get(options["path"])
                        outcome = str(response.status_code)
                    except Exception as exc:  # every failure is an outcome to report
                        outcome = type(exc).__name__
                    latencies.append(time.monotonic() - start)
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    if options["pause"]:
                        await asyncio.sleep(options["pause"])

            async with asyncio.TaskGroup() as group:
                for _ in range(options["workers"]):
                    group.create_task(work())
    return {"outcomes": outcomes, "events": events, "latencies": latencies}


if __name__ == "__main__":
    given = {**_OPTIONS, **json.loads(sys.argv[3])}
    report = asyncio.run(main(sys.argv[1], sys.argv[2], given))
    sys.stdout.write(json.dumps(report) + "\n")
