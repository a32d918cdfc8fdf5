"""Token revocation: RFC 7009.

A refresh token takes its whole grant with it (§2.1: the access tokens of that grant too); an
access token is remembered as revoked until it would have expired. A token the client does not
own, or one we do not know, is answered with 200 all the same (§2.2); only a revocation that
took effect is audited.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event
from ..keys import KeyRing
from ..security.digests import token_digest
from ..storage import Client, Grant, RefreshToken, RevokedAccessToken, revoke_grants
from ..storage.generations import Topic, bump
from .errors import InvalidToken
from .tokens import MAX_TOKEN_LENGTH, decode_signed

Revoker = Callable[[Session, KeyRing, str, Client, str], bool]


def revoke(db: Session, keyring: KeyRing, issuer: str, client: Client, token: str, hint: str | None) -> None:
    if len(token) > MAX_TOKEN_LENGTH:
        return
    order: tuple[Revoker, Revoker] = (_revoke_access_token, _revoke_refresh_token)
    if hint == "refresh_token":
        order = (_revoke_refresh_token, _revoke_access_token)
    for attempt in order:
        if attempt(db, keyring, issuer, client, token):
            return


def _revoke_refresh_token(db: Session, _keyring: KeyRing, _issuer: str, client: Client, token: str) -> bool:
    row = db.get(RefreshToken, token_digest(token))
    if row is None:
        return False
    grant = db.get(Grant, row.grant_id)
    if grant is not None and grant.client_id == client.id:
        revoke_grants(db, Grant.id == grant.id)
        _revoked(db, client, grant.user_id, "refresh_token")
    return True


def _revoke_access_token(db: Session, keyring: KeyRing, issuer: str, client: Client, token: str) -> bool:
    if token.count(".") != 2:
        return False
    try:
        claims = decode_signed(keyring, token).claims
    except InvalidToken:
        return False
    jti, exp = claims.get("jti"), claims.get("exp")
    if claims.get("iss") != issuer or claims.get("client_id") != client.id or not isinstance(jti, str):
        return True
    if not isinstance(exp, int) or exp <= time.time():
        return True
    try:
        with db.begin_nested():
            db.add(RevokedAccessToken(jti=jti[:80], expires_at=exp))
            bump(db, Topic.REVOCATIONS)
    except IntegrityError:
        return True
    subject = claims.get("sub")
    _revoked(db, client, subject if isinstance(subject, str) and subject != client.id else None, "access_token")
    return True


def _revoked(db: Session, client: Client, user_id: str | None, kind: str) -> None:
    detail = {"kind": kind}
    audit.record(db, Event.TOKEN_REVOKED, outcome="success", user_id=user_id, client_id=client.id, detail=detail)
