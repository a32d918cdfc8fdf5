"""Spending what may be used once: a code, a refresh token, a link, an authenticator step, the
claim on a message or a client's key fetch.

It is spent with one conditional ``UPDATE`` whose condition says "not spent yet": of requests
racing for the same thing, in one process or several, the database lets exactly one statement
match, so exactly one of them wins. Checking first and writing afterwards would let two win.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from .base import Base
from .database import changed_rows


def spend_once(db: Session, model: type[Base], *where: ColumnElement[bool], **values: Any) -> bool:
    """Set ``values`` on the one row of ``model`` that ``where`` selects; whether this call did.

    ``where`` names the row and says it is not spent yet (``used_at IS NULL``, an older step):
    ``False`` means it was spent before, or by a request that won the race.
    """
    return changed_rows(db.execute(update(model).where(*where).values(**values))) == 1
