"""The statements of a refresh, each built once: finding a presented token with its grant and
person, spending it, and storing the one that replaces it.

Every refresh runs all three. Built anew each time, with the ORM's work around them (synchronising
the identity map after the UPDATE, a unit of work to flush the INSERT), they took half the CPU of a
refresh besides its two signatures. The spend and the store act on the table itself: they change
no object the session holds (the presented token's row is read as columns, not loaded as an
object), so that work was for nothing.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from ..security.digests import new_token, token_digest
from .base import Base, now
from .database import changed_rows
from .grants import Grant, RefreshToken
from .people import User

_TABLE: Table = Base.metadata.tables[RefreshToken.__tablename__]

_FIND = (
    select(RefreshToken.used_at, RefreshToken.expires_at, RefreshToken.scope, Grant, User)
    .join(Grant, Grant.id == RefreshToken.grant_id)
    .outerjoin(User, User.id == Grant.user_id)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)

_SPEND = (
    update(_TABLE)
    .where(_TABLE.c.token_hash == bindparam("spent_hash"), _TABLE.c.used_at.is_(None))
    .values(used_at=bindparam("spent_at"))
)

_ADD = insert(_TABLE)


class Presented(NamedTuple):
    """A presented refresh token's row, with its grant and the grant's person (``None`` once
    deleted)."""

    token_hash: str
    used_at: int | None
    expires_at: int
    scope: str
    grant: Grant
    user: User | None


def find(db: Session, token: str) -> Presented | None:
    """The presented ``token``, in one query; ``None`` for one never issued."""
    token_hash = token_digest(token)
    found = db.execute(_FIND, {"token_hash": token_hash}).one_or_none()
    if found is None:
        return None
    used_at, expires_at, scope, grant, user = found
    return Presented(token_hash, used_at, expires_at, scope, grant, user)


def spend(db: Session, token_hash: str) -> bool:
    """Mark the token spent, if it was not yet; whether this call did (as
    :func:`~idp.storage.spend_once`: of requests racing for it, exactly one does)."""
    return changed_rows(db.execute(_SPEND, {"spent_hash": token_hash, "spent_at": now()})) == 1


def add(db: Session, lifetime: int, *, grant_id: str, scope: str) -> str:
    """Store a new refresh token of ``grant_id`` that lives ``lifetime`` seconds, kept only as its
    digest (as :func:`~idp.storage.add_secret`); the token, for the caller to hand over this once."""
    token = new_token()
    stamp = now()
    row = {
        "token_hash": token_digest(token),
        "grant_id": grant_id,
        "scope": scope,
        "created_at": stamp,
        "expires_at": stamp + lifetime,
        "used_at": None,
    }
    db.execute(_ADD, row)
    return token
