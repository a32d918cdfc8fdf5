"""Getting back into an account (a reset by emailed link) and changing a known password.

Asking for a reset answers the same, in words and in time, whether or not the account exists:
both cases count the recent links to that address and write an audit event, and only a known
account also gets a token and a queued email (the worker sends it later, so the mail server's
time never shows). A link lives an hour, is kept only as a SHA-256 digest, and is spent by a
conditional UPDATE, so two requests racing with one link cannot both use it.

A reset is how the real owner takes an account back from whoever else may hold it: it ends every
session, revokes every grant (offline refresh tokens too), ends a lockout, and tells the owner. A
change by a signed-in person ends every session but the one making the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from urllib.parse import urlencode

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .. import audit
from ..messaging.outbox import enqueue_email
from ..security.digests import new_token, token_digest
from ..sessions import sign_out_everywhere
from ..settings import Settings
from ..storage import ActionToken, User, now
from .authentication import count_failure
from .password_policy import set_password
from .passwords import verify_password
from .users import normalize_email

PURPOSE = "reset_password"
LINK_LIFETIME = 3600
LIMIT = 3
LIMIT_WINDOW = 15 * 60
MAX_TOKEN = 100
MAX_PASSWORD_INPUT = 1024


class ResetLinkInvalid(Exception):
    """The link is unknown, used, expired, or its account changed since it was sent."""


class WrongCurrentPassword(Exception):
    """The signed-in person's current password was not right."""


class Requested(Enum):
    """What became of a reset request: for the audit log only, never for the person."""

    SENT = "sent"
    UNKNOWN_ACCOUNT = "unknown_account"
    DISABLED = "disabled"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class ResetRequest:
    result: Requested
    email: str
    user_id: str | None = None


def request_reset(db: Session, settings: Settings, secret_key: str, raw_email: str) -> ResetRequest:
    """Queue a reset link for the account with this email, if there is one and it may have one.

    Raises :class:`~.users.UserError` for something that is not an email address at all; that says
    nothing about which accounts exist.
    """
    email = normalize_email(raw_email)
    stamp = now()
    recent = db.scalar(
        select(func.count())
        .select_from(ActionToken)
        .where(
            ActionToken.email == email,
            ActionToken.purpose == PURPOSE,
            ActionToken.created_at > stamp - LIMIT_WINDOW,
        )
    )
    user = db.scalar(select(User).where(User.email == email))
    if user is None:
        return ResetRequest(Requested.UNKNOWN_ACCOUNT, email)
    if user.disabled:
        return ResetRequest(Requested.DISABLED, email, user.id)
    if recent >= LIMIT:
        return ResetRequest(Requested.RATE_LIMITED, email, user.id)
    token = new_token()
    db.add(
        ActionToken(
            token_hash=token_digest(token),
            purpose=PURPOSE,
            user_id=user.id,
            email=email,
            created_at=stamp,
            expires_at=stamp + LINK_LIFETIME,
        )
    )
    enqueue_email(
        db,
        secret_key,
        email,
        "password_reset",
        {
            "link": f"{settings.issuer}/password/reset?{urlencode({'token': token})}",
            "minutes": LINK_LIFETIME // 60,
        },
    )
    db.flush()
    return ResetRequest(Requested.SENT, email, user.id)


def find_reset_link(db: Session, token: str | None) -> ActionToken | None:
    """The live reset link this token belongs to, if any."""
    if not token or len(token) > MAX_TOKEN:
        return None
    link = db.get(ActionToken, token_digest(token))
    if link is None or link.purpose != PURPOSE or link.used_at is not None or link.expires_at <= now():
        return None
    return link


def reset_password(db: Session, settings: Settings, secret_key: str, token: str, password: str) -> tuple[User, int]:
    """Spend the link and make ``password`` the account's; the person and how many sessions ended.

    Raises :class:`ResetLinkInvalid` or :class:`~.password_policy.PasswordRejected`; after either,
    the caller rolls back, which leaves a link refused for its password still usable.
    """
    link = find_reset_link(db, token)
    user = db.get(User, link.user_id) if link is not None else None
    if link is None or user is None or user.disabled or user.email != link.email:
        raise ResetLinkInvalid
    stamp = now()
    spent = db.execute(
        update(ActionToken)
        .where(ActionToken.token_hash == link.token_hash, ActionToken.used_at.is_(None), ActionToken.expires_at > stamp)
        .values(used_at=stamp)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if spent != 1:
        raise ResetLinkInvalid
    set_password(db, settings, user, password)
    db.execute(
        update(ActionToken)
        .where(ActionToken.user_id == user.id, ActionToken.purpose == PURPOSE, ActionToken.used_at.is_(None))
        .values(used_at=stamp)
        .execution_options(synchronize_session=False)
    )
    ended = sign_out_everywhere(db, user.id)
    user.failed_sign_ins = 0
    user.locked_until = None
    user.email_verified = True
    _notify(db, settings, secret_key, user, stamp)
    db.flush()
    return user, ended


def change_password(
    db: Session,
    settings: Settings,
    secret_key: str,
    user: User,
    current_password: str,
    new_password: str,
    keep_session_id: str | None,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
) -> int:
    """A signed-in person changes their password; returns how many other sessions ended.

    The session ``keep_session_id`` stays; every other one ends, and every grant not made in the
    kept session is revoked, so an intruder's refresh tokens die even when their session had
    already run out. Raises :class:`WrongCurrentPassword` (its audit event is already in the
    transaction: commit to keep it) or :class:`~.password_policy.PasswordRejected` (nothing
    changed).
    """
    if not verify_password(user.password_hash, current_password[:MAX_PASSWORD_INPUT]):
        audit.record(
            db, "password_changed", outcome="failure", user_id=user.id, ip=ip, user_agent=user_agent,
            detail={"reason": "wrong_current_password"},
        )
        count_failure(db, settings, secret_key, user)
        raise WrongCurrentPassword
    set_password(db, settings, user, new_password)
    stamp = now()
    ended = sign_out_everywhere(db, user.id, keep_session_id=keep_session_id)
    _notify(db, settings, secret_key, user, stamp)
    audit.record(
        db, "password_changed", outcome="success", user_id=user.id, ip=ip, user_agent=user_agent,
        detail={"sessions_ended": ended},
    )
    db.flush()
    return ended


def _notify(db: Session, settings: Settings, secret_key: str, user: User, stamp: int) -> None:
    if user.email is None:
        return
    enqueue_email(
        db,
        secret_key,
        user.email,
        "password_changed",
        {
            "when": datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "reset_link": f"{settings.issuer}/password/forgot",
        },
    )

