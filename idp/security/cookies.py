"""Cookie names: ``__Host-`` prefixed over https, so no subdomain can set or shadow them."""

from __future__ import annotations


def cookie_name(base: str, secure: bool) -> str:
    return f"__Host-{base}" if secure else base
