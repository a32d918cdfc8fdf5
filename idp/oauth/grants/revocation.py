"""Revoking a grant: the whole family of tokens one authorization produced."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from ...storage import Grant, now


def revoke_grant(db: Session, grant_id: str) -> None:
    db.execute(update(Grant).where(Grant.id == grant_id, Grant.revoked_at.is_(None)).values(revoked_at=now()))
