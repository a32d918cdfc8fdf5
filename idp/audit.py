"""Writing the audit log: one event per thing a person or the system did, in the caller's transaction.

An event is written with what caused it, so it exists exactly when that committed. It records
facts an operator may need later (who, what, when, from where, which client, how it ended) and
never a secret: no password, code or token goes into an event, and recipients are masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from .storage import AuditEvent, now

MAX_USER_AGENT = 512
_SECRET_WORDS = ("password", "secret", "token", "code")


class Event(StrEnum):
    """The names events are stored under; a misspelt one is a type error, not a row no query finds."""

    ACCOUNT_LOCKED = "account_locked"
    CODE_SENT = "code_sent"
    CODE_VERIFIED = "code_verified"
    EMAIL_CHANGE_REQUESTED = "email_change_requested"
    EMAIL_CHANGED = "email_changed"
    EMAIL_VERIFIED = "email_verified"
    MESSAGE_FAILED = "message_failed"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"
    PASSWORD_RESET_REQUESTED = "password_reset_requested"
    PASSWORD_SET = "password_set"
    PHONE_REMOVED = "phone_removed"
    PHONE_VERIFIED = "phone_verified"
    PROFILE_UPDATED = "profile_updated"
    RATE_LIMITED = "rate_limited"
    REAUTHENTICATION = "reauthentication"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    REGISTRATION = "registration"
    SECOND_FACTOR_DISABLED = "second_factor_disabled"
    SECOND_FACTOR_ENABLED = "second_factor_enabled"
    SECOND_FACTOR_REQUESTED = "second_factor_requested"
    SESSION_ENDED = "session_ended"
    SIGN_IN = "sign_in"
    VERIFICATION_RESENT = "verification_resent"


def record(
    db: Session,
    event: Event,
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
