"""A real SMTP server (aiosmtpd) on 127.0.0.1, run on the test's own event loop.

    async with smtp_server() as server:
        ...  # point a mailer at server.port
        message = await server.inbox.get()

Tests steer it through ``server.on_data``: a coroutine that may stall, refuse or note
the message before it is accepted. No threads: the server shares the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["SmtpServer", "free_port", "silent_server", "smtp_server"]

OnData = Callable[[EmailMessage], Awaitable[str | None]]


@dataclass
class SmtpServer:
    port: int
    inbox: asyncio.Queue[EmailMessage] = field(default_factory=asyncio.Queue)
    # Every accepted message, in order, duplicates included.
    accepted: list[EmailMessage] = field(default_factory=list)
    # Called on DATA before accepting; a returned string is the reply instead of 250.
    on_data: OnData | None = None
    on_rcpt: Callable[[str], str | None] | None = None
    protocols: set[SMTP] = field(default_factory=set)
    # Every envelope recipient (RCPT TO) accepted, as the server received it.
    recipients: list[str] = field(default_factory=list)


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self._server.on_rcpt is not None:
            refusal = self._server.on_rcpt(address)
            if refusal is not None:
                return refusal
        envelope.rcpt_tos.append(address)
        self._server.recipients.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if self._server.on_data is not None:
            reply = await self._server.on_data(message)
            if reply is not None:
                return reply
        self._server.accepted.append(message)
        self._server.inbox.put_nowait(message)
        return "250 Message accepted for delivery"


def free_port() -> int:
    """A loopback port nobody listens on right now (for a server that is 'down')."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def smtp_server(
    port: int = 0, state: SmtpServer | None = None, *, smtputf8: bool = False
) -> AsyncIterator[SmtpServer]:
    """Serve SMTP on 127.0.0.1 until the block ends; ``state`` carries over a restart.

    ``smtputf8`` makes the server offer SMTPUTF8 (RFC 6531) in its EHLO answer.
    """
    loop = asyncio.get_running_loop()
    holder = state or SmtpServer(port=port)
    handler = _Handler(holder)

    def protocol() -> SMTP:
        smtp = SMTP(handler, hostname="smtp.loopwise.test", loop=loop, enable_SMTPUTF8=smtputf8)
        holder.protocols.add(smtp)
        return smtp

    server = await loop.create_server(protocol, "127.0.0.1", port)
    holder.port = server.sockets[0].getsockname()[1]
    try:
        yield holder
    finally:
        server.close()
        for smtp in holder.protocols:
            if smtp.transport is not None:
                smtp.transport.close()
        holder.protocols.clear()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never says a word; yields its port."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
