"""Clients generated from /openapi.json run the README tour: Python and TypeScript.

The Python client comes from openapi-python-client, the TypeScript types from
openapi-typescript (used through openapi-fetch); both as a new user would make them. Each
tour is type-checked strictly against what was generated (``mypy --strict``, ``tsc
--strict``), with no casts and no ``Any``, then run against the real app on loopback.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shutil
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from loopwise.service.app import create_app
from loopwise.service.settings import load_settings
from tests.node import CLIENTS, NODE, install, node_env, run, tool
from tests.process_guard import run_process
from tests.servers import serve_asgi

# Module-scoped fixtures (a server, generated code): one xdist worker runs the module.
pytestmark = pytest.mark.xdist_group("openapi_clients")

Tour = Callable[[str], Awaitable[list[str]]]

TOUR_STEPS = ["register", "login", "me", "orders", "preferences", "overview", "logout"]


def _spec() -> dict[str, object]:
    # The schema needs no database: it is built from the routes alone.
    settings = load_settings(database_url="postgresql://unused@127.0.0.1/unused", _env_file=None)
    return create_app(settings).openapi()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "openapi.json"
    path.write_text(json.dumps(_spec()))
    return path


@pytest.fixture(scope="module")
def python_tour(tmp_path_factory: pytest.TempPathFactory, spec_file: Path) -> Iterator[Tour]:
    """Generate ``loopwise_client``, type-check the tour against it, and import the tour."""
    root = tmp_path_factory.mktemp("python_client")
    generator = Path(sys.executable).with_name("openapi-python-client")
    output = root / "loopwise_client"
    command = ["generate", "--path", str(spec_file), "--output-path", str(output)]
    run([str(generator), *command, "--meta", "none"], cwd=root)
    shutil.copy(CLIENTS / "tour.py", root / "loopwise_tour.py")
    mypy = Path(sys.executable).with_name("mypy")
    run(
        [str(mypy), "--strict", "--no-incremental", "--follow-imports=silent", "loopwise_tour.py"],
        cwd=root,
    )
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("loopwise_tour")
        yield module.tour
    finally:
        sys.path.remove(str(root))
        for name in [
            n for n in sys.modules if n.split(".")[0] in {"loopwise_client", "loopwise_tour"}
        ]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def typescript_tour(tmp_path_factory: pytest.TempPathFactory, spec_file: Path) -> Path:
    """Types from openapi-typescript, the tour compiled by ``tsc --strict``: its JS file."""
    install(CLIENTS)
    root = tmp_path_factory.mktemp("typescript_client")
    for name in ("tour.ts", "tsconfig.json", "package.json"):
        shutil.copy(CLIENTS / name, root / name)
    (root / "node_modules").symlink_to(CLIENTS / "node_modules")
    run([tool(CLIENTS, "openapi-typescript"), str(spec_file), "-o", "api.d.ts"], cwd=root)
    run([tool(CLIENTS, "tsc"), "-p", "tsconfig.json"], cwd=root)
    return root / "out" / "tour.js"


def test_tours_have_no_casts_or_any() -> None:
    """The tours narrow with isinstance/checks: no cast, no Any, no `as`, no `any`."""
    python = (CLIENTS / "tour.py").read_text()
    assert not re.search(r"\bcast\(|\bAny\b|type: ignore", python)
    typescript = (CLIENTS / "tour.ts").read_text()
    assert not re.search(r"\bas\s+[A-Za-z{]|:\s*any\b|<any>|@ts-", typescript)


@pytest.fixture
async def verified_on_registration(database_url: str) -> None:
    """Users of this test's database are verified as they register.

    The tours stand in for a user who clicked the emailed link: a client cannot read the
    outbox. The link itself is proven in tests/service/accounts/test_verification.py.
    """
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            CREATE FUNCTION test_verify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN NEW.email_verified_at := now(); RETURN NEW; END $$;
            CREATE TRIGGER test_verify BEFORE INSERT ON users
            FOR EACH ROW EXECUTE FUNCTION test_verify();
            """
        )
    finally:
        await conn.close()


@pytest.mark.usefixtures("verified_on_registration")
async def test_python_client_runs_the_tour(app: FastAPI, python_tour: Tour) -> None:
    """The generated Python client runs the whole tour: typed models, typed Problems."""
    async with serve_asgi(app) as base_url:
        assert await python_tour(base_url) == [
            "register",
            "password rule",
            "login",
            "throttled",
            "me",
            "orders",
            "preferences",
            "overview",
            "logout",
        ]


@pytest.mark.usefixtures("verified_on_registration")
async def test_typescript_client_runs_the_tour(app: FastAPI, typescript_tour: Path) -> None:
    """The tour compiled with tsc --strict against openapi-typescript's types runs in node."""
    async with serve_asgi(app) as base_url:
        status, stdout, stderr = await run_process(
            NODE,
            str(typescript_tour),
            base_url,
            within=120,
            env=node_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    assert status == 0, stderr.decode()
    assert json.loads(stdout) == TOUR_STEPS


async def test_openapi_json_is_compressed_for_clients_that_accept_it(
    client: httpx.AsyncClient,
) -> None:
    """The ~50 KB schema goes out gzipped when asked; identical once decoded."""
    plain = await client.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    packed = await client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content) / 4
    assert packed.json() == plain.json()
