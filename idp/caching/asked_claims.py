"""The claims a grant asked for by name for UserInfo (OIDC Core §5.5), kept per grant.

A grant's request is written once, when the grant is made, and never changed, so what a process
read of it stays true for as long as the grant lives (whether it still does is the access token's
check, not this one's). At most :data:`MAX_ENTRIES` grants are kept.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..oauth import claims_request
from ..storage import Grant

MAX_ENTRIES = 10_000


class AskedClaims:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, ...]] = {}

    def for_userinfo(self, db: Session, grant_id: str) -> tuple[str, ...]:
        asked = self._entries.get(grant_id)
        if asked is not None:
            return asked
        grant = db.get(Grant, grant_id)
        if grant is None:
            return ()
        asked = tuple(claims_request.asked(grant.requested_claims, "userinfo"))
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[grant_id] = asked
        return asked
