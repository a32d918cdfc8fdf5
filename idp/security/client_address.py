"""The client's IP address: the socket peer, unless that peer is a trusted proxy.

``X-Forwarded-For`` is believed only from ``IDP_TRUSTED_PROXIES``; from there it is read right to
left, skipping trusted hops, so a client cannot forge its address by sending the header itself.

Rate limits count per client, and an IPv6 client is a network: a host chooses the low 64 bits of
its address itself (RFC 4291, section 2.5.1: "Interface IDs are required to be 64 bits long"), so
a budget per address would let it take a fresh one for every request. Its address counts as its
network of ``IDP_RATE_LIMIT_IPV6_PREFIX`` bits; an IPv4 address, mapped into IPv6 or not, counts
as itself.
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


def rate_limit_key(address: str | None, ipv6_prefix: int) -> str:
    """Whom a rate limit counts ``address`` as: itself for IPv4, its network for IPv6."""
    if address is None:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)
