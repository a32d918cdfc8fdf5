"""Everything the provider holds about a person, for them to take with them (GDPR Art. 15 and 20).

The profile, the sign-in sessions (ended ones too, until cleanup removes them), what each
application was granted and the consent given to it, and the audit events about the person. What
would let someone act as the person, or tell how they prove it, is left out: no password hash, no
authenticator secret, no recovery code, no token or code digest.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage import AuditEvent, BrowserSession, Client, Consent, Grant, User

FORMAT = 1
"""The version of the document's shape, for a program that reads it."""


def personal_data(db: Session, user: User, exported_at: int) -> dict[str, Any]:
    sessions = select(BrowserSession).where(BrowserSession.user_id == user.id).order_by(BrowserSession.created_at)
    events = select(AuditEvent).where(AuditEvent.user_id == user.id).order_by(AuditEvent.id)
    return {
        "format": FORMAT,
        "exported_at": exported_at,
        "profile": _profile(user),
        "sessions": [_session(s) for s in db.scalars(sessions)],
        "applications": _applications(db, user),
        "audit_events": [_event(e) for e in db.scalars(events)],
    }


def _profile(user: User) -> dict[str, Any]:
    return {
        "sub": user.id,
        "email": user.email,
        "email_verified": bool(user.email_verified),
        "phone_number": user.phone,
        "phone_number_verified": bool(user.phone_verified),
        "name": user.name,
        "locale": user.locale,
        "has_password": user.password_hash is not None,
        "second_factor": user.mfa_method,
        "disabled": bool(user.disabled),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def _session(session: BrowserSession) -> dict[str, Any]:
    return {
        "id": session.id,
        "signed_in_at": session.auth_time,
        "methods": list(session.amr),
        "created_at": session.created_at,
        "last_seen_at": session.last_seen_at,
        "expires_at": session.expires_at,
        "ended_at": session.ended_at,
        "ip": session.ip,
        "user_agent": session.user_agent,
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
            "consent": _consent(consents.get(client_id)),
            "grants": [_grant(g) for g in grants if g.client_id == client_id],
        }
        for client_id in client_ids
    ]


def _consent(consent: Consent | None) -> dict[str, Any] | None:
    return None if consent is None else {"scope": consent.scope, "granted_at": consent.granted_at}


def _grant(grant: Grant) -> dict[str, Any]:
    return {
        "scope": grant.scope,
        "created_at": grant.created_at,
        "revoked_at": grant.revoked_at,
        "session_id": grant.session_id,
    }


def _event(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "event": event.event,
        "outcome": event.outcome,
        "client_id": event.client_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "detail": event.detail,
    }
