"""The authorization code grant at the token endpoint: RFC 6749 §4.1.3, RFC 7636 §4.6.

A code is spent once (:func:`~idp.storage.spend_once`), so that of two requests racing with the
same code exactly one wins. A code presented again revokes everything the first exchange issued
(RFC 6749 §4.1.2, RFC 9700 §4.5): the refusal says that revocation stays (:class:`ReusedGrant`).
A code outlives no sign-in session: ending one revokes the grants made in it, so its codes must not
start new ones afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from ... import audit
from ...audit import Event
from ...security.digests import new_id, token_digest
from ...storage import AuthorizationCode, BrowserSession, Client, Grant, User, now, revoke_grants, spend_once
from ..errors import InvalidGrant, InvalidRequest, ReusedGrant
from .issuance import TokenIssuer
from .parameters import required

GRANT_TYPE = "authorization_code"
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(db: Session, issuer: TokenIssuer, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
    code = required(form, "code")
    row = db.get(AuthorizationCode, token_digest(code)) if len(code) <= 128 else None
    if row is None or row.client_id != client.id:
        raise InvalidGrant("the code is invalid")
    if row.used_at is not None:
        raise _reused(db, row)
    if row.expires_at <= now():
        raise InvalidGrant("the code has expired")
    _check_redirect_uri(row, form.get("redirect_uri") or None)
    _check_pkce(row, form.get("code_verifier"))
    _check_session_alive(db, row)

    grant_id = new_id()
    if not spend_once(
        db,
        AuthorizationCode,
        AuthorizationCode.code_hash == row.code_hash,
        AuthorizationCode.used_at.is_(None),
        used_at=now(),
        grant_id=grant_id,
    ):
        db.refresh(row)
        raise _reused(db, row)

    user = db.get(User, row.user_id)
    if user is None or user.disabled:
        raise InvalidGrant("the person of this code can no longer sign in")
    scope = row.scope.split()
    grant = Grant(
        id=grant_id,
        client_id=client.id,
        user_id=user.id,
        session_id=row.session_id,
        scope=row.scope,
        auth_time=row.auth_time,
        amr=list(row.amr),
        requested_claims=row.requested_claims,
        created_at=now(),
    )
    db.add(grant)
    db.flush()
    return issuer.for_user(
        db, grant_type=GRANT_TYPE, client=client, user=user, grant=grant, scope=scope, nonce=row.nonce
    )


def _reused(db: Session, row: AuthorizationCode) -> ReusedGrant:
    """Revoke what the code's first exchange issued; ``row`` is as its winner committed it."""
    revoke_grants(db, Grant.id == row.grant_id)
    audit.record(db, Event.AUTHORIZATION_CODE_REUSED, outcome="failure", user_id=row.user_id, client_id=row.client_id)
    return ReusedGrant("the code was already used")


def _check_session_alive(db: Session, row: AuthorizationCode) -> None:
    """Refuse a code whose sign-in session has ended (signed out, signed out everywhere, disabled).

    The session row stays locked until this exchange commits, so that a sign-out running at the
    same time waits for it and then revokes the grant made here along with the others.
    """
    if row.session_id is None:
        return
    session = db.get(BrowserSession, row.session_id, with_for_update=True)
    if session is None or session.ended_at is not None:
        raise InvalidGrant("the sign-in session of this code has ended")


def _check_redirect_uri(row: AuthorizationCode, redirect_uri: str | None) -> None:
    """RFC 6749 §4.1.3: required, and the same, when the authorization request carried one. A code
    of the authorization challenge endpoint had none (draft-ietf-oauth-first-party-apps §6): one
    sent for it anyway is refused, as no redirect it could match ever happened."""
    if row.redirect_uri is None:
        if redirect_uri is not None:
            raise InvalidGrant("redirect_uri sent, but the authorization request had none")
        return
    if redirect_uri is None:
        raise InvalidRequest("redirect_uri is required")
    if redirect_uri != row.redirect_uri:
        raise InvalidGrant("redirect_uri does not match the authorization request")


def _check_pkce(row: AuthorizationCode, verifier: str | None) -> None:
    """RFC 7636 §4.6, and RFC 9700 §4.8.2: a verifier without a challenge is refused too."""
    if row.code_challenge is None:
        if verifier is not None:
            raise InvalidGrant("code_verifier sent, but the authorization request had no code_challenge")
        return
    if verifier is None:
        raise InvalidGrant("code_verifier is required")
    if not _VERIFIER.match(verifier):
        raise InvalidGrant("code_verifier is malformed")
    if not hmac.compare_digest(s256(verifier), row.code_challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge")
