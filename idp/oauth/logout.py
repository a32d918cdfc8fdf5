"""RP-Initiated Logout 1.0: who asks, and where the browser may be sent afterwards.

A ``post_logout_redirect_uri`` is used only when it matches, character for character, one the
client registered, and the client is known from ``id_token_hint`` or ``client_id`` (§2, §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from ..catalogs import N_
from ..keys import KeyRing
from ..sso import ActiveSession
from ..storage import Client
from .authorization import verified_id_token_hint
from .errors import BadAuthorizationTarget


@dataclass(frozen=True)
class LogoutRequest:
    hint: dict[str, Any] | None
    client: Client | None
    post_logout_redirect_uri: str | None
    state: str | None

    def hint_names(self, active: ActiveSession | None) -> bool:
        """The hint proves the request comes for this very session, so no confirmation is needed."""
        if self.hint is None:
            return False
        if active is None:
            return True
        sid = self.hint.get("sid")
        if sid is not None:
            return bool(sid == active.session.id)
        return bool(self.hint.get("sub") == active.user.id)


def parse_logout(db: Session, keyring: KeyRing, issuer: str, values: dict[str, str]) -> LogoutRequest:
    hint = verified_id_token_hint(keyring, issuer, values["id_token_hint"]) if values.get("id_token_hint") else None
    hint_client = None
    if hint is not None:
        audience = hint.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        hint_client = hint.get("azp") or (audiences[0] if len(audiences) == 1 else None)
    client_id = values.get("client_id") or None
    if client_id and hint_client and client_id != hint_client:
        raise BadAuthorizationTarget(N_("client_id does not match the client of id_token_hint."))
    client_id = client_id or hint_client
    client = db.get(Client, client_id) if isinstance(client_id, str) and len(client_id) <= 64 else None
    uri = values.get("post_logout_redirect_uri") or None
    if uri is not None and (client is None or uri not in client.post_logout_redirect_uris):
        raise BadAuthorizationTarget(N_("The post_logout_redirect_uri is not one this application registered."))
    state = values.get("state")
    return LogoutRequest(
        hint=hint,
        client=client,
        post_logout_redirect_uri=uri,
        state=state if state is not None and len(state) <= 2048 else None,
    )
