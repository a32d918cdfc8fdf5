"""Random secrets and the digests under which they are stored.

Codes, refresh tokens and session cookies carry 256 random bits, so a plain SHA-256 is enough to
keep them useless if the database leaks. Client secrets get a keyed HMAC-SHA-256 as the issue asks:
fast enough for the token endpoint, and a stolen table is useless without ``IDP_SECRET_KEY``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_id() -> str:
    return uuid.uuid4().hex


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def keyed_digest(secret_key: str, value: str) -> str:
    return hmac.new(secret_key.encode(), value.encode(), hashlib.sha256).hexdigest()


def digests_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
