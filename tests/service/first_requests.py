"""Serve one of every kind of request right after start-up; print what each imported.

    python -m tests.service.first_requests DSN DATA_DIR OUT   # OUT: {request: [modules]}

Run in a fresh interpreter by ``test_app.py``: a module already imported by another test
would hide a lazy import. The app is driven through ASGI directly, so nothing the client
side imports is counted.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Message

from loopwise.service.app import create_app
from loopwise.service.settings import load_settings


async def _request(
    app: ASGIApp, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, bytes]:
    payload = b"" if body is None else json.dumps(body).encode()
    headers = [(b"host", b"first.test"), (b"content-type", b"application/json")]
    if payload:
        headers.append((b"content-length", str(len(payload)).encode()))
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # nothing more: the client stays
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def main(dsn: str, data_dir: str) -> dict[str, list[str]]:
    settings = load_settings(
        database_url=dsn,
        data_dir=data_dir,
        log_format="json",
        argon2_time_cost=1,
        argon2_memory_kib=64,
        argon2_parallelism=1,
        _env_file=None,
    )
    imported: dict[str, list[str]] = {}
    # Start-up spawns the hashing process too: on a busy machine it takes past the 5 s
    # asgi-lifespan allows by default.
    async with LifespanManager(
        create_app(settings), startup_timeout=60, shutdown_timeout=60
    ) as manager:
        app = manager.app
        known = set(sys.modules)

        async def serve(
            method: str, path: str, body: Any = None, token: str | None = None
        ) -> bytes:
            nonlocal known
            status, answer = await _request(app, method, path, body, token)
            new = sorted(set(sys.modules) - known)
            known |= set(new)
            imported[f"{method} {path} -> {status}"] = new
            return answer

        account = {"email": "first@example.com", "password": "correct horse battery"}
        created = json.loads(await serve("POST", "/register", {**account, "display_name": "F"}))
        token = json.loads(await serve("POST", "/login", account))["access_token"]
        user = f"/users/{created['id']}"
        for path in (user, "/users/me", "/users/me/preferences", "/users/me/orders"):
            await serve("GET", path, token=token)
            await serve("HEAD", path, token=token)
        await serve("GET", "/users/me/overview", token=token)
        await serve("POST", "/users/me/orders", {"item": "x", "quantity": 1}, token=token)
        await serve("GET", "/users/me/orders/1", token=token)
        await serve("PUT", "/users/me/preferences", {}, token=token)
        await serve("PATCH", "/users/me", {"display_name": "G"}, token=token)
        # The answers that are not 2xx: each has its own path through the app.
        await serve("GET", user, token="x" * 43)  # 401
        await serve("GET", "/users/0", token=token)  # 422
        await serve("GET", "/users/999999", token=token)  # 404
        await serve("DELETE", "/users/1/nothing")  # 404, no route
        await serve("PUT", "/login")  # 405
        await serve("POST", "/login", {"email": 1})  # 422, a body
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            await serve("GET", path)
        await serve("POST", "/logout", token=token)
    return imported


if __name__ == "__main__":
    dsn, data_dir, out = sys.argv[1:]
    imported = asyncio.run(main(dsn, data_dir))
    Path(out).write_text(json.dumps(imported, indent=1))
