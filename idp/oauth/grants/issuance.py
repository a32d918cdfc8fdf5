"""The token response every grant ends with (RFC 6749 §5.1, OIDC Core §3.1.3.3), and its audit
event: which grant issued what to whom, never a token."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ... import audit
from ...audit import Event
from ...keys import KeyRing
from ...settings import Settings
from ...storage import Client, Grant, User, now, refresh_tokens
from .. import claims_request
from .. import scopes as scope_rules
from ..tokens import issue_access_token, issue_id_token


class TokenIssuer:
    def __init__(self, keyring: KeyRing, settings: Settings, audit_queue: audit.AuditQueue) -> None:
        self.keyring = keyring
        self.settings = settings
        self.audit_queue = audit_queue

    def for_user(
        self,
        db: Session,
        *,
        grant_type: str,
        client: Client,
        user: User,
        grant: Grant,
        scope: list[str],
        nonce: str | None = None,
        refresh_scope: list[str] | None = None,
    ) -> dict[str, Any]:
        """Access token for ``scope``; an ID token with ``openid``, with the claims ``scope``
        releases and those the grant's request asked for by name; a refresh token only when the
        grant holds ``offline_access`` and the client may refresh (OIDC Core §11)."""
        issuer = self.settings.issuer
        access = issue_access_token(
            self.keyring,
            issuer=issuer,
            ttl=self._access_token_ttl(client),
            client_id=client.id,
            subject=user.id,
            scope=scope,
            grant_id=grant.id,
            auth_time=grant.auth_time,
        )
        response: dict[str, Any] = {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": access.expires_in,
            "scope": " ".join(scope),
        }
        if "openid" in scope:
            response["id_token"] = issue_id_token(
                self.keyring,
                issuer=issuer,
                ttl=self.settings.id_token_ttl,
                client_id=client.id,
                subject=user.id,
                auth_time=grant.auth_time,
                amr=list(grant.amr),
                session_id=grant.session_id,
                nonce=nonce,
                access_token=access.token,
                extra_claims=scope_rules.user_claims(
                    db, user, scope, claims_request.asked(grant.requested_claims, "id_token")
                ),
            )
        kept_scope = refresh_scope if refresh_scope is not None else scope
        if "offline_access" in kept_scope and "refresh_token" in client.grant_types:
            response["refresh_token"] = self._refresh_token(db, client, grant, kept_scope)
        detail = _issued(grant_type, response)
        self.audit_queue.record(
            db, Event.TOKENS_ISSUED, outcome="success", user_id=user.id, client_id=client.id, detail=detail
        )
        return response

    def _refresh_token(self, db: Session, client: Client, grant: Grant, scope: list[str]) -> str:
        return refresh_tokens.add(db, self._refresh_token_ttl(client, grant), grant_id=grant.id, scope=" ".join(scope))

    def _access_token_ttl(self, client: Client) -> int:
        """The client's own lifetime, never beyond the server's: keys stay published only that long."""
        return min(client.access_token_ttl or self.settings.access_token_ttl, self.settings.access_token_ttl)

    def _refresh_token_ttl(self, client: Client, grant: Grant) -> int:
        """Each refresh token lives the client's lifetime (never beyond the server's) from its
        issue, so that use keeps a sign-in going; with an absolute maximum, none outlives that
        many seconds after the grant began, however often it was refreshed."""
        ttl = min(client.refresh_token_ttl or self.settings.refresh_token_ttl, self.settings.refresh_token_ttl)
        if client.refresh_token_absolute_ttl is not None:
            ttl = min(ttl, grant.created_at + client.refresh_token_absolute_ttl - now())
        return ttl

    def for_client(self, db: Session, *, grant_type: str, client: Client, scope: list[str]) -> dict[str, Any]:
        """RFC 9068 §2.2: with no person involved, ``sub`` is the client itself."""
        access = issue_access_token(
            self.keyring,
            issuer=self.settings.issuer,
            ttl=self._access_token_ttl(client),
            client_id=client.id,
            subject=client.id,
            scope=scope,
        )
        response: dict[str, Any] = {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": access.expires_in,
        }
        if scope:
            response["scope"] = " ".join(scope)
        self.audit_queue.record(
            db, Event.TOKENS_ISSUED, outcome="success", client_id=client.id, detail=_issued(grant_type, response)
        )
        return response


def _issued(grant_type: str, response: dict[str, Any]) -> dict[str, Any]:
    """The ``tokens_issued`` event's detail: which grant issued which kinds, never a token."""
    issued = [kind for kind in ("access_token", "id_token", "refresh_token") if kind in response]
    return {"grant_type": grant_type, "scope": response.get("scope", ""), "issued": issued}
