"""The client address behind trusted proxies, and only behind them."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import Receive, Scope, Send

from loopwise.service.app import create_app
from loopwise.service.http.proxies import TrustedProxies
from loopwise.service.settings import Settings, load_settings


async def _client_seen(networks: list[str], peer: str, forwarded: str | None) -> str:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["client"][0])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = TrustedProxies(app, networks=[ipaddress.ip_network(n) for n in networks])
    transport = httpx.ASGITransport(app=wrapped, client=(peer, 4242))
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/", headers=headers)
    return seen[0]


@pytest.mark.parametrize(
    ("networks", "peer", "forwarded", "client"),
    [
        # No trusted proxies: the header is the client's own word and is ignored.
        ([], "10.0.0.5", "203.0.113.7", "10.0.0.5"),
        # A trusted proxy: the right-most untrusted hop is the client.
        (["10.0.0.0/8"], "10.0.0.5", "203.0.113.7", "203.0.113.7"),
        # A forged left-most entry does not win over what the proxy appended.
        (["10.0.0.0/8"], "10.0.0.5", "1.2.3.4, 203.0.113.7", "203.0.113.7"),
        # Chained trusted proxies are skipped.
        (["10.0.0.0/8"], "10.0.0.5", "203.0.113.7, 10.1.1.1", "203.0.113.7"),
        # An untrusted peer cannot claim another address.
        (["10.0.0.0/8"], "198.51.100.9", "203.0.113.7", "198.51.100.9"),
        # Garbage in the header leaves the peer in place.
        (["10.0.0.0/8"], "10.0.0.5", "not-an-ip", "10.0.0.5"),
        (["10.0.0.0/8"], "10.0.0.5", "", "10.0.0.5"),
        (["::1/128"], "::1", "2001:db8::1", "2001:db8::1"),
    ],
)
async def test_client_address(
    networks: list[str], peer: str, forwarded: str | None, client: str
) -> None:
    """The client is the right-most untrusted hop, when the peer is a trusted proxy."""
    assert await _client_seen(networks, peer, forwarded) == client


def test_trusted_proxies_setting_is_validated() -> None:
    """A malformed network in LOOPWISE_TRUSTED_PROXIES stops start-up, by name."""
    from loopwise.service.settings import InvalidSettings

    with pytest.raises(InvalidSettings, match="LOOPWISE_TRUSTED_PROXIES"):
        load_settings(trusted_proxies=["10.0.0.0/33"], _env_file=None)


async def test_login_throttle_tells_clients_behind_a_proxy_apart(
    settings: Settings,
) -> None:
    """Behind a trusted proxy, one client's failures throttle that client, not everyone."""
    configured = settings.model_copy(
        update={
            "trusted_proxies": [ipaddress.ip_network("127.0.0.1/32")],
            "login_max_failures_per_address": 3,
            "login_max_failures_per_account": 100,
        }
    )
    app = create_app(configured)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def attempt(address: str, n: int) -> int:
                response = await client.post(
                    "/login",
                    json={"email": f"nobody{n}@example.com", "password": "wrong password"},
                    headers={"X-Forwarded-For": address},
                )
                return response.status_code

            first = [await attempt("203.0.113.1", n) for n in range(4)]
            other = await attempt("203.0.113.2", 99)
    assert first == [401, 401, 401, 429]
    assert other == 401
