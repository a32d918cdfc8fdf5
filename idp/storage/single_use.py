"""Handing out and spending what may be used once: a code, a refresh token, a link, an
authenticator step, the claim on a message or a client's key fetch.

A secret handed out is kept only as its digest (:func:`add_secret`), so a leaked table holds
nothing that can be used.

It is spent with one conditional ``UPDATE`` whose condition says "not spent yet": of requests
racing for the same thing, in one process or several, the database lets exactly one statement
match, so exactly one of them wins. Checking first and writing afterwards would let two win.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from ..security.digests import new_token, token_digest
from .base import Base, now
from .database import changed_rows

Row = TypeVar("Row", bound=Base)


def add_secret(db: Session, model: type[Row], lifetime: int, **columns: Any) -> tuple[Row, str]:
    """A new row of ``model`` (``columns``, the secret's digest as ``token_hash``) for a new secret
    that lives ``lifetime`` seconds, and the secret, returned this once for the caller to hand over."""
    secret = new_token()
    stamp = now()
    row = model(token_hash=token_digest(secret), created_at=stamp, expires_at=stamp + lifetime, **columns)
    db.add(row)
    return row, secret


def spend_once(db: Session, model: type[Base], *where: ColumnElement[bool], **values: Any) -> bool:
    """Set ``values`` on the one row of ``model`` that ``where`` selects; whether this call did.

    ``where`` names the row and says it is not spent yet (``used_at IS NULL``, an older step):
    ``False`` means it was spent before, or by a request that won the race.
    """
    return changed_rows(db.execute(update(model).where(*where).values(**values))) == 1
