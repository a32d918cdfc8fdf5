"""Token introspection: RFC 7662. Anything not active answers only ``{"active": false}`` (§2.2)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ..caching.live_tokens import LiveTokens
from ..keys import KeyRing
from ..security.digests import token_digest
from ..storage import Grant, RefreshToken, now
from .errors import InvalidToken
from .tokens import MAX_TOKEN_LENGTH, verify_access_token

INACTIVE: dict[str, Any] = {"active": False}


def introspect(
    db: Session, keyring: KeyRing, live: LiveTokens, issuer: str, caller_id: str, token: str, _hint: str | None
) -> dict[str, Any]:
    """The token's shape tells its type (a JWT has two dots, a refresh token none), so the
    ``token_type_hint`` is not needed; a wrong hint must not hide an active token (§2.1).

    An access token is for any resource server (its ``aud`` is the issuer), so any confidential
    client may ask about it. A refresh token is for no resource server: the server MUST say
    whether the token can be used where the question comes from (§4), so it is active only to
    the client it was issued to, and to anyone else as inactive as a stolen one should be."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return INACTIVE
    if token.count(".") == 2:
        try:
            claims = verify_access_token(db, keyring, issuer, token, live)
        except InvalidToken:
            return INACTIVE
        return {"active": True, "token_type": "Bearer", **claims}
    return _refresh_token(db, issuer, caller_id, token)


def _refresh_token(db: Session, issuer: str, caller_id: str, token: str) -> dict[str, Any]:
    row = db.get(RefreshToken, token_digest(token))
    if row is None or row.used_at is not None or row.expires_at <= now():
        return INACTIVE
    grant = db.get(Grant, row.grant_id)
    if grant is None or grant.revoked_at is not None or grant.client_id != caller_id:
        return INACTIVE
    return {
        "active": True,
        "token_type": "refresh_token",
        "scope": row.scope,
        "client_id": grant.client_id,
        "sub": grant.user_id,
        "iss": issuer,
        "iat": row.created_at,
        "exp": row.expires_at,
    }
