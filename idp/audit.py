"""Writing the audit log: one event per thing a person or the system did, in the caller's transaction.

An event is written with what caused it, so it exists exactly when that committed. It records
facts an operator may need later (who, what, when, from where, which client, how it ended) and
never a secret: no password, code or token goes into an event, and recipients are masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from .storage import AuditEvent, now

MAX_USER_AGENT = 512
_SECRET_WORDS = ("password", "secret", "token", "code")


def record(
    db: Session,
    event: str,
    *,
    outcome: str,
    user_id: str | None = None,
    client_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Add an event to the caller's transaction.

    A ``detail`` key that names a secret is refused outright: passing a code or a password here is
    a programming error, and failing loudly in tests beats a secret quietly kept in the database.
    """
    for key in detail or {}:
        if any(word in key.lower() for word in _SECRET_WORDS):
            raise ValueError(f"audit detail {key!r} looks like a secret; record facts, never secrets")
    db.add(
        AuditEvent(
            at=now(),
            event=event,
            outcome=outcome,
            user_id=user_id,
            client_id=client_id,
            ip=ip,
            user_agent=user_agent[:MAX_USER_AGENT] if user_agent is not None else None,
            detail=dict(detail) if detail is not None else None,
        )
    )


def mask(recipient: str) -> str:
    """Enough of an email address or phone number to tell whose it is, not enough to use it."""
    if "@" in recipient:
        local, _, domain = recipient.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(recipient) > 10:
        return f"{recipient[:6]}***{recipient[-4:]}"
    return f"{recipient[:3]}***{recipient[-2:]}"
