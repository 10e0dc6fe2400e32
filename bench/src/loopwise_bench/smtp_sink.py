"""A loopback SMTP sink that answers each message after a set delay.

    python -m loopwise_bench.smtp_sink PORT DELAY_MS

The register scenarios send their welcome emails here: at 1 ms it is a fast mail server,
at 2,000 ms a slow one. ``POST /register`` must not notice the difference. It accepts
everything and keeps nothing; it counts messages and prints the count when stopped.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["DelayedSink", "main"]


class DelayedSink:
    """aiosmtpd handler: wait ``delay`` seconds, then accept the message."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        self.received += 1
        return "250 Message accepted for delivery"


async def _serve(port: int, delay: float) -> None:
    sink = DelayedSink(delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.loopwise.example"), "127.0.0.1", port
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
    print(f"received {sink.received}", flush=True)  # noqa: T201 -- read from the log


def main() -> None:
    port, delay_ms = int(sys.argv[1]), float(sys.argv[2])
    asyncio.run(_serve(port, delay_ms / 1000))


if __name__ == "__main__":
    main()
