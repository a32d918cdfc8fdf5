"""Everything the provider holds about a person, for them to take with them (GDPR Art. 15 and 20).

The profile, the sign-in sessions (ended ones too, until cleanup removes them), what each
application was granted and the consent given to it, and the audit events about the person. What
would let someone act as the person, or tell how they prove it, is left out: no password hash, no
authenticator secret, no recovery code, no token or code digest. Rows are given by the names of
their columns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage import AuditEvent, BrowserSession, Client, Consent, Grant, User, UserGroup
from .profile import profile_of

FORMAT = 1
"""The version of the document's shape, for a program that reads it."""
SESSION = ("id", "auth_time", "amr", "created_at", "last_seen_at", "expires_at", "ended_at", "ip", "user_agent")
GRANT = ("scope", "created_at", "revoked_at", "session_id")
CONSENT = ("scope", "granted_at")
EVENT = ("at", "event", "outcome", "client_id", "ip", "user_agent", "detail")


def personal_data(db: Session, user: User, exported_at: int) -> dict[str, Any]:
    sessions = select(BrowserSession).where(BrowserSession.user_id == user.id).order_by(BrowserSession.created_at)
    events = select(AuditEvent).where(AuditEvent.user_id == user.id).order_by(AuditEvent.id)
    groups = select(UserGroup.name).where(UserGroup.user_id == user.id).order_by(UserGroup.name)
    profile = profile_of(user) | {
        "given_name": user.given_name,
        "family_name": user.family_name,
        "preferred_username": user.preferred_username,
        "zoneinfo": user.zoneinfo,
        "groups": list(db.scalars(groups)),
        "has_password": user.password_hash is not None,
        "terms_version": user.terms_version,
        "terms_accepted_at": user.terms_accepted_at,
        "disabled": bool(user.disabled),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }
    return {
        "format": FORMAT,
        "exported_at": exported_at,
        "profile": profile,
        "sessions": [_columns(s, SESSION) for s in db.scalars(sessions)],
        "applications": _applications(db, user),
        "audit_events": [_columns(e, EVENT) for e in db.scalars(events)],
    }


def _applications(db: Session, user: User) -> list[dict[str, Any]]:
    """Per client: the consent given to it and the grants it holds or held."""
    grants = list(db.scalars(select(Grant).where(Grant.user_id == user.id).order_by(Grant.created_at)))
    consents = {c.client_id: c for c in db.scalars(select(Consent).where(Consent.user_id == user.id))}
    client_ids = sorted({g.client_id for g in grants} | set(consents))
    names = {row.id: row.name for row in db.execute(select(Client.id, Client.name).where(Client.id.in_(client_ids)))}
    return [
        {
            "client_id": client_id,
            "name": names.get(client_id),
            "consent": _columns(consents[client_id], CONSENT) if client_id in consents else None,
            "grants": [_columns(g, GRANT) for g in grants if g.client_id == client_id],
        }
        for client_id in client_ids
    ]


def _columns(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}
