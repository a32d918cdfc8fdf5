"""Revoking grants: the one way a family of tokens stops working.

A grant's refresh tokens are refused once it is revoked, and so are its access tokens, whose
``jti`` names it. A grant is revoked for a reused code or refresh token, a client's revocation
request, the end of the session it was made in, and a password reset or "sign out everywhere".
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from .base import now
from .generations import Topic, bump
from .grants import Grant


def revoke_grants(db: Session, *where: ColumnElement[bool]) -> None:
    """Revoke every live grant that ``where`` selects; one revoked before keeps its time."""
    db.execute(update(Grant).where(Grant.revoked_at.is_(None), *where).values(revoked_at=now()))
    bump(db, Topic.REVOCATIONS)
