"""The application context a one-shot command works in."""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event
from ..context import Context
from ..migrate import upgrade
from ..settings import Settings


def open_context(settings: Settings) -> Context:
    """Bring the schema up to date first, so that a command run before ``idp migrate`` still
    finds the tables it reads and writes."""
    upgrade(settings.database_url)
    return Context.build(settings)


def as_operator(db: Session) -> None:
    """Every audit event ``db`` records comes from the operator who ran the command, named by their
    operating-system account (no address: the command ran on the server)."""
    audit.set_origin(db, audit.Origin(ip=None, user_agent=f"idp command line, operator {getpass.getuser()}"))


def record_admin_action(
    db: Session,
    command: str,
    options: Sequence[str] = (),
    *,
    user_id: str | None = None,
    client_id: str | None = None,
    counts: Mapping[str, int] | None = None,
) -> None:
    """An operator's change, in the audit trail with the operator (:func:`as_operator`) and the
    options given, never their values; ``counts`` say how much a command that changes many did."""
    detail: dict[str, object] = {"command": command, "options": sorted(options), **(counts or {})}
    audit.record(db, Event.ADMIN_ACTION, outcome="success", user_id=user_id, client_id=client_id, detail=detail)
