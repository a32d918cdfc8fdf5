"""The client's IP address: the socket peer, unless that peer is a trusted proxy.

``X-Forwarded-For`` is believed only from ``IDP_TRUSTED_PROXIES``; from there it is read right to
left, skipping trusted hops, so a client cannot forge its address by sending the header itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(request: Request, proxies: Sequence[Network]) -> str | None:
    peer = request.client.host if request.client else None
    if peer is None or not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer
