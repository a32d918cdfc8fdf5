"""Deleting an account, at the person's request or an operator's.

What goes: the person's row and everything that hangs on it, by the database's cascades: sign-in
sessions, grants with their refresh tokens, consents, codes, links, sign-ins under way, earlier
password hashes, recovery codes. Every session is ended and every grant revoked first, in the same
transaction, so that what was issued stops working at once on every instance: a refresh token
finds no grant, and an access token names a grant that is gone, which introspection and UserInfo
answer as inactive.

What stays, anonymised: the audit events about the person, as the record of what happened to an
account (until ``IDP_AUDIT_RETENTION_DAYS`` removes them), with their address, user agent and
details removed: the event, its time, its client and the account's random id, which leads to no
one once the row is gone. The event of the deletion itself keeps where the request came from, as a
stolen account deleted by its thief must be traceable.

Who is told: the person, at their verified email address, else at their verified number, in
their language.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event
from ..context import Context
from ..messaging.outbox import enqueue, notice_useful_until
from ..sso import sign_out_everywhere
from ..storage import AuditEvent, User, now
from .codes_vocabulary import Channel


def delete_account(
    ctx: Context, db: Session, user: User, *, by: Literal["self", "operator"], client_id: str | None = None
) -> None:
    """``user`` is locked by the caller (:func:`~.users.lock_user`); ``by`` is who asked: the
    person (``self``) or an operator (``operator``)."""
    sign_out_everywhere(db, user.id)
    _notify(ctx, db, user)
    db.execute(update(AuditEvent).where(AuditEvent.user_id == user.id).values(ip=None, user_agent=None, detail=None))
    db.execute(delete(User).where(User.id == user.id))
    db.expunge(user)
    audit.record(db, Event.ACCOUNT_DELETED, outcome="success", user_id=user.id, client_id=client_id, detail={"by": by})


def _notify(ctx: Context, db: Session, user: User) -> None:
    when = {"when": datetime.fromtimestamp(now(), UTC).strftime("%Y-%m-%d %H:%M UTC")}
    until = notice_useful_until()
    if user.email is not None and user.email_verified:
        enqueue(
            db,
            ctx.secret_key,
            Channel.EMAIL,
            user.email,
            "account_deleted",
            when,
            useful_until=until,
            locale=user.locale,
        )
    elif user.phone is not None and user.phone_verified:
        enqueue(
            db, ctx.secret_key, Channel.SMS, user.phone, "account_deleted", when, useful_until=until, locale=user.locale
        )
