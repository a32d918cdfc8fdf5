"""Every change to what an app is told about a person bumps :attr:`Topic.PEOPLE`, wherever it is made.

People are changed in many places (the account pages and API, the CLI, imports, deletion,
housekeeping), so the bump is not left to each of them: the session notices the change itself,
in a flush of a changed, deleted or regrouped person, and in an UPDATE, DELETE or INSERT statement
on people or their groups. Columns no claim reads (:data:`UNCLAIMED`) change on every sign-in and
bump nothing; a statement that writes only such columns says so with :data:`CLAIMS_UNCHANGED`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from .generations import Topic, bump
from .people import User, UserGroup

UNCLAIMED = frozenset(
    {
        "password_hash",
        "failed_sign_ins",
        "locked_until",
        "identity_confirmed_at",
        "mfa_method",
        "totp_secret",
        "totp_last_step",
        "registration_browser_hash",
        "terms_version",
        "terms_accepted_at",
        "phone_verified_at",
    }
)
"""Columns of a person that no claim, and no check of a token, reads."""

CLAIMS_UNCHANGED = "claims_unchanged"
"""Execution option of an UPDATE of people that writes only :data:`UNCLAIMED` columns (or writes
a column with its own value, to take a lock)."""

_BUMPED = "people_bumped"


def watch_people(maker: sessionmaker[Session]) -> None:
    event.listen(maker, "before_flush", _before_flush)
    event.listen(maker, "do_orm_execute", _on_statement)
    event.listen(maker, "after_commit", _forget)
    event.listen(maker, "after_rollback", _forget)


def _before_flush(db: Session, _context: Any, _instances: Any) -> None:
    if any(isinstance(row, UserGroup) for row in db.new) or any(
        isinstance(row, User | UserGroup) for row in db.deleted
    ):
        _bump(db)
    elif any(isinstance(row, UserGroup) or (isinstance(row, User) and _claims_changed(row)) for row in db.dirty):
        _bump(db)


def _claims_changed(user: User) -> bool:
    state = inspect(user)
    return any(attribute.key not in UNCLAIMED and attribute.history.has_changes() for attribute in state.attrs)


def _on_statement(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    mapper = state.bind_mapper
    if mapper is None or mapper.class_ not in (User, UserGroup):
        return
    if state.is_update and state.execution_options.get(CLAIMS_UNCHANGED):
        return
    _bump(state.session)


def _bump(db: Session) -> None:
    """Once per transaction is enough: the counter moves when the transaction commits."""
    if not db.info.get(_BUMPED):
        db.info[_BUMPED] = True
        bump(db, Topic.PEOPLE)


def _forget(db: Session) -> None:
    db.info.pop(_BUMPED, None)
