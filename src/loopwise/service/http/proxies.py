"""The client's address behind trusted reverse proxies (``X-Forwarded-For``).

Behind a load balancer every connection comes from the balancer, so anything keyed on the
client address (the per-address login throttle) would lump all users together. When the
peer is a trusted proxy, the client is the right-most ``X-Forwarded-For`` entry that is
not itself a trusted proxy: entries further left were written by the client and prove
nothing. With no trusted proxies configured (the default) the header is ignored.

    LOOPWISE_TRUSTED_PROXIES='["10.0.0.0/8"]' loopwise serve
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TrustedProxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Rewrite ``scope["client"]`` from ``X-Forwarded-For`` when the peer is trusted."""

    def __init__(self, app: ASGIApp, *, networks: Sequence[_Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client and self._trusted(client[0]):
            forwarded = [
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"x-forwarded-for"
            ]
            hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
            for hop in reversed(hops):
                if not self._trusted(hop):
                    if _is_ip(hop):
                        scope = {**scope, "client": (hop, 0)}
                    break
        await self.app(scope, receive, send)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
