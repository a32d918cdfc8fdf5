"""The refresh token grant: RFC 6749 §6, rotated on every use (RFC 9700 §4.14.2).

A token is spent once (:func:`~idp.storage.spend_once`); presenting a spent token again, or losing
a race for it, is taken as theft and revokes the whole family, which stays revoked although the
request is refused (:class:`ReusedGrant`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ... import audit
from ...audit import Event
from ...security.digests import token_digest
from ...storage import Client, Grant, RefreshToken, User, now, revoke_grants, spend_once
from .. import scopes as scope_rules
from ..errors import InvalidGrant, InvalidScope, ReusedGrant
from .issuance import TokenIssuer
from .parameters import required

GRANT_TYPE = "refresh_token"


def issue(db: Session, issuer: TokenIssuer, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
    presented = required(form, "refresh_token")
    found = _token_grant_and_person(db, presented)
    if found is None or found[1].client_id != client.id:
        raise InvalidGrant("the refresh token is invalid")
    row, grant, user = found
    if grant.revoked_at is not None:
        raise InvalidGrant("the refresh token was revoked")
    if row.used_at is not None:
        raise _reused(db, grant)
    if row.expires_at <= now():
        raise InvalidGrant("the refresh token has expired")

    kept_scope = row.scope.split()
    requested = scope_rules.parse(form.get("scope")) if "scope" in form else kept_scope
    if not requested or not set(requested) <= set(kept_scope):
        raise InvalidScope("the scope may only narrow what was granted")

    if not spend_once(
        db, RefreshToken, RefreshToken.token_hash == row.token_hash, RefreshToken.used_at.is_(None), used_at=now()
    ):
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


def _token_grant_and_person(db: Session, presented: str) -> tuple[RefreshToken, Grant, User | None] | None:
    """The token's row, its grant and the grant's person, in one query."""
    if len(presented) > 128:
        return None
    query = (
        select(RefreshToken, Grant, User)
        .join(Grant, Grant.id == RefreshToken.grant_id)
        .outerjoin(User, User.id == Grant.user_id)
        .where(RefreshToken.token_hash == token_digest(presented))
    )
    found = db.execute(query).one_or_none()
    return None if found is None else (found[0], found[1], found[2])


def _reused(db: Session, grant: Grant) -> ReusedGrant:
    revoke_grants(db, Grant.id == grant.id)
    audit.record(db, Event.REFRESH_TOKEN_REUSED, outcome="failure", user_id=grant.user_id, client_id=grant.client_id)
    return ReusedGrant("the refresh token was already used; every token of its family is now revoked")
