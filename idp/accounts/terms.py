"""The terms a person must accept (``IDP_TERMS_URL``, ``IDP_TERMS_VERSION``): when they register,
and at their first sign-in after the version changes. Each acceptance is kept on the person
(version and time, in their data export) and in the audit trail."""

from __future__ import annotations

from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event
from ..settings import Settings
from ..storage import User, now
from .errors import AccountError, Code


class TermsNotAccepted(AccountError):
    """Registration without accepting the terms."""

    code = Code.TERMS_NOT_ACCEPTED


def pending(settings: Settings, user: User) -> bool:
    """Whether the person has yet to accept the terms in force."""
    return settings.terms_version is not None and user.terms_version != settings.terms_version


def accept(db: Session, settings: Settings, user: User, client_id: str | None) -> None:
    """The person accepted the terms in force; ``user`` is locked by the caller, or new."""
    assert settings.terms_version is not None
    user.terms_version = settings.terms_version
    user.terms_accepted_at = now()
    detail = {"version": settings.terms_version}
    audit.record(db, Event.TERMS_ACCEPTED, outcome="success", user_id=user.id, client_id=client_id, detail=detail)
