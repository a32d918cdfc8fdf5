"""Minting and checking the signed tokens: ID tokens (OIDC Core §2) and RFC 9068 access tokens.

An access token's ``jti`` starts with the id of the grant it came from (``<grant>.<random>``), so
that revoking a grant also revokes its access tokens without a write per token issued.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy.orm import Session

from ..caching.live_tokens import LiveTokens
from ..keys import KeyRing
from ..storage import Client, Grant, RevokedAccessToken
from .assurance import acr_of
from .errors import InvalidToken

MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    expires_in: int
    jti: str


def _sign(keyring: KeyRing, claims: dict[str, Any], typ: str) -> str:
    active = keyring.snapshot().active
    return jwt.encode({"alg": "RS256", "kid": active.kid, "typ": typ}, claims, active.key)


def issue_access_token(
    keyring: KeyRing,
    *,
    issuer: str,
    ttl: int,
    client_id: str,
    subject: str,
    scope: list[str],
    grant_id: str | None = None,
    auth_time: int | None = None,
) -> IssuedAccessToken:
    """RFC 9068 §2.2. With no resource indicator the audience is the provider itself (§3)."""
    issued = int(time.time())
    jti = f"{grant_id}.{secrets.token_urlsafe(12)}" if grant_id else secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": issuer,
        "client_id": client_id,
        "jti": jti,
        "iat": issued,
        "exp": issued + ttl,
    }
    if scope:
        claims["scope"] = " ".join(scope)
    if auth_time is not None:
        claims["auth_time"] = auth_time
    return IssuedAccessToken(token=_sign(keyring, claims, "at+jwt"), expires_in=ttl, jti=jti)


def token_hash_claim(token: str) -> str:
    """``at_hash`` (OIDC Core §3.1.3.6): the left half of SHA-256 over the token, base64url."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def issue_id_token(
    keyring: KeyRing,
    *,
    issuer: str,
    ttl: int,
    client_id: str,
    subject: str,
    auth_time: int,
    amr: list[str],
    session_id: str | None,
    nonce: str | None,
    access_token: str | None,
    extra_claims: dict[str, Any],
) -> str:
    issued = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "azp": client_id,
        "exp": issued + ttl,
        "iat": issued,
        "auth_time": auth_time,
        "amr": amr,
        "acr": acr_of(amr),
        **extra_claims,
    }
    if session_id:
        claims["sid"] = session_id
    if nonce is not None:
        claims["nonce"] = nonce
    if access_token is not None:
        claims["at_hash"] = token_hash_claim(access_token)
    return _sign(keyring, claims, "JWT")


def decode_signed(keyring: KeyRing, token: str) -> jwt.Token:
    """Check the signature against the published keys only; claims are the caller's to check."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("the token is malformed")
    try:
        found = keyring.snapshot().decode(token)
    except (JoseError, ValueError, TypeError):
        raise InvalidToken("the token is malformed or its signature does not verify") from None
    return jwt.Token(dict(found.header), dict(found.claims))  # a caller's change stays its own


def verify_access_token(db: Session, keyring: KeyRing, issuer: str, token: str, live: LiveTokens) -> dict[str, Any]:
    """A bearer token we issued, unexpired, unrevoked: RFC 9068 §4 plus our own revocation list,
    which is asked only about a token not found unrevoked since the last revocation. A token of
    a grant dies with it; one issued to a client alone (its ``sub`` is the client, RFC 9068 §2.2)
    dies with the client."""
    decoded = decode_signed(keyring, token)
    claims = decoded.claims
    if decoded.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
        raise InvalidToken("not an access token")
    if claims.get("iss") != issuer:
        raise InvalidToken("the token was not issued here")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= time.time():
        raise InvalidToken("the token has expired")
    jti = claims.get("jti")
    if not isinstance(jti, str):
        raise InvalidToken("the token has no id")
    if live.known_live(db, jti):
        return claims
    if db.get(RevokedAccessToken, jti) is not None:
        raise InvalidToken("the token was revoked")
    grant_id = jti.split(".", 1)[0] if "." in jti else None
    if grant_id is not None:
        grant = db.get(Grant, grant_id)
        if grant is None or grant.revoked_at is not None:
            raise InvalidToken("the token was revoked")
    elif claims.get("sub") == claims.get("client_id"):
        client_id = claims.get("client_id")
        if not isinstance(client_id, str) or db.get(Client, client_id) is None:
            raise InvalidToken("the token's client is no longer registered")
    live.found_live(db, jti)
    return claims
