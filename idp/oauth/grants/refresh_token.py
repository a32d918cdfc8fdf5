"""The refresh token grant: RFC 6749 §6, rotated on every use (RFC 9700 §4.14.2).

A token is spent once (:func:`~idp.storage.refresh_tokens.spend`); presenting a spent token again, or losing
a race for it, is taken as theft and revokes the whole family, which stays revoked although the
request is refused (:class:`ReusedGrant`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from ... import audit
from ...audit import Event
from ...storage import Client, Grant, now, refresh_tokens, revoke_grants
from .. import scopes as scope_rules
from ..errors import InvalidGrant, InvalidScope, ReusedGrant
from .issuance import TokenIssuer
from .parameters import required

GRANT_TYPE = "refresh_token"


def issue(db: Session, issuer: TokenIssuer, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
    presented = required(form, "refresh_token")
    found = refresh_tokens.find(db, presented) if len(presented) <= 128 else None
    if found is None or found.grant.client_id != client.id:
        raise InvalidGrant("the refresh token is invalid")
    grant, user = found.grant, found.user
    if grant.revoked_at is not None:
        raise InvalidGrant("the refresh token was revoked")
    if found.used_at is not None:
        raise _reused(db, grant)
    if found.expires_at <= now():
        raise InvalidGrant("the refresh token has expired")

    kept_scope = found.scope.split()
    requested = scope_rules.parse(form.get("scope")) if "scope" in form else kept_scope
    if not requested or not set(requested) <= set(kept_scope):
        raise InvalidScope("the scope may only narrow what was granted")

    if not refresh_tokens.spend(db, found.token_hash):
        raise _reused(db, grant)

    if user is None or user.disabled:
        raise InvalidGrant("the person of this grant can no longer sign in")
    return issuer.for_user(
        db,
        grant_type=GRANT_TYPE,
        client=client,
        user=user,
        grant=grant,
        scope=requested,
        refresh_scope=kept_scope,
    )


def _reused(db: Session, grant: Grant) -> ReusedGrant:
    revoke_grants(db, Grant.id == grant.id)
    audit.record(db, Event.REFRESH_TOKEN_REUSED, outcome="failure", user_id=grant.user_id, client_id=grant.client_id)
    return ReusedGrant("the refresh token was already used; every token of its family is now revoked")
