"""A counter per kind of change, bumped in the transaction that makes the change.

Every process keeps what it reads on hot paths (clients, whether a token is still good) in memory,
tagged with the counter it read; a tag that no longer matches is a miss. Bumping in the changing
transaction makes the counter exact: it moves exactly when the change commits.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, String, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base


class Topic(StrEnum):
    CLIENTS = "clients"
    """A client registered, changed, given a new secret or deleted."""
    REVOCATIONS = "revocations"
    """A grant revoked or deleted, or an access token revoked."""
    PEOPLE = "people"
    """Something an app is told about a person changed (a claim, their groups), or they were
    disabled or deleted (:mod:`idp.storage.people_changes`)."""


class Generation(Base):
    __tablename__ = "generations"

    topic: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


MIRROR = "generation_mirror"
"""``Session.info`` key of a callable that each topic bumped in a session is handed to once the
session commits (:func:`mirror_committed`): how a process with Redis makes the change known there
too."""

_PENDING = "generations_pending"


def bump(db: Session, topic: Topic) -> None:
    """Mark ``topic`` changed by the caller's transaction."""
    db.execute(update(Generation).where(Generation.topic == topic.value).values(value=Generation.value + 1))
    if MIRROR in db.info:
        db.info.setdefault(_PENDING, set()).add(topic)


def mirror_committed(db: Session) -> None:
    """The ``after_commit`` listener of every session that has a mirror: a session may commit
    many times, and each commit's bumps must reach the mirror, not only the first's."""
    topics: set[Topic] = db.info.pop(_PENDING, set())
    mirror = db.info[MIRROR]
    for topic in sorted(topics):
        mirror(topic)
