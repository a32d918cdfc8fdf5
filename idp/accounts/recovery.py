"""Getting back into an account (a reset by emailed link) and changing a known password.

Asking for a reset answers the same, in words and in time, whether or not the account exists:
every request counts the recent links to that address, makes a token, renders and seals the email
that carries it and writes it to the outbox, and the page writes an audit event. Only a link that
may go (a known, enabled account under its limit) is kept, with its token's row; any other is
rolled back to a savepoint, so nothing is sent to an address without an account. The worker sends
what was kept later, so the mail server's time never shows. A link (:mod:`.links`) lives an hour.

A reset is how the real owner takes an account back from whoever else may hold it: it ends every
session, revokes every grant (offline refresh tokens too), spends every other link still waiting
(a change of email address asked from a stolen session among them), ends a lockout, takes off a
phone number added since the person last showed who they are (:mod:`.confirmation`: whoever added
it could otherwise sign back in by SMS code), and tells the owner, naming that number. A reset of
an account whose address was never proven is the first proof of it, and takes the account back
from whoever registered it (:mod:`.reclaim`): their phone, second factor and name go too. A change
by a signed-in person ends every session but the one making the change.

A signed-in person changing the password gives the current one (:mod:`.reauthentication`):
a wrong one counts toward the lockout, and while the account is locked none is checked at all.

Both do their slow work first, without the person's row lock: checking the current password, the
policy and breach check, hashing the new one (:func:`~.password_policy.prepare_password`). Then
they lock the row (a reset by spending its link) and make sure the account is still the one they
checked: a reset and a change at once run one after the other, and the reset has the last word,
either by running second or by ending the session the change came from before the change may
go ahead. A password that changed meanwhile refuses a change with
:class:`~.errors.AccountChanged`, and trying again works; a reset checks the new password again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event, mask
from ..messaging.outbox import enqueue, notice_useful_until
from ..security.digests import new_token
from ..settings import Settings
from ..sso import sign_out_everywhere
from ..storage import ActionToken, User, now
from . import links
from .codes_vocabulary import Channel, Purpose
from .confirmation import confirm_identity, drop_unconfirmed_phone
from .errors import AccountChanged, AccountError, Code, InvalidEmail
from .password_policy import apply_password, prepare_password
from .reauthentication import AccountLocked, NotReauthenticated, confirm, prove
from .reclaim import take_back
from .users import UserError, normalize_email

PURPOSE = Purpose.RESET_PASSWORD
LINK_LIFETIME = 3600
LIMIT = 3
LIMIT_WINDOW = 15 * 60


class ResetLinkInvalid(AccountError):
    """The link is unknown, used, expired, or its account changed since it was sent."""

    code = Code.INVALID_LINK

    fixed_reason = "reset"


class Requested(Enum):
    """What became of a reset request: for the audit log only, never for the person."""

    SENT = "sent"
    UNKNOWN_ACCOUNT = "unknown_account"
    DISABLED = "disabled"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class Reset:
    user: User
    sessions_ended: int
    phone_removed: str | None
    """The number taken off because it came after the person last showed who they are."""


@dataclass(frozen=True)
class ResetRequest:
    result: Requested
    email: str
    user_id: str | None = None


def request_reset(db: Session, settings: Settings, secret_key: str, raw_email: str) -> ResetRequest:
    """Queue a reset link for the account with this email, if there is one and it may have one, and
    record what became of the request.

    Raises :class:`~.errors.InvalidEmail` for something that is not an email address at all; that
    says nothing about which accounts exist.
    """
    try:
        email = normalize_email(raw_email)
    except UserError:
        raise InvalidEmail("not_an_address") from None
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
    user_id = user.id if user is not None else None
    if user is None:
        result = Requested.UNKNOWN_ACCOUNT
    elif user.disabled:
        result = Requested.DISABLED
    elif (recent or 0) >= LIMIT:
        result = Requested.RATE_LIMITED
    else:
        result = Requested.SENT
    with db.begin_nested() as link_work:
        _queue_link(db, settings, secret_key, email, user_id)
        if result is not Requested.SENT:
            link_work.rollback()
    detail: dict[str, object] = {"recipient": mask(email)}
    if result is not Requested.SENT:
        detail["reason"] = result.value
    outcome = "success" if result is Requested.SENT else "failure"
    audit.record(db, Event.PASSWORD_RESET_REQUESTED, outcome=outcome, user_id=user_id, detail=detail)
    return ResetRequest(result, email, user_id)


def _queue_link(db: Session, settings: Settings, secret_key: str, email: str, user_id: str | None) -> None:
    """Issue a reset link and queue the email that carries it to ``email``. Without an account
    there is no row for the token (it would name no person): the token is made all the same."""
    token = links.issue(db, PURPOSE, user_id, email, LINK_LIFETIME) if user_id is not None else new_token()
    enqueue(
        db,
        secret_key,
        Channel.EMAIL,
        email,
        "password_reset",
        {"link": links.url(settings.issuer, "/password/reset", token), "minutes": LINK_LIFETIME // 60},
        useful_until=now() + LINK_LIFETIME,
    )


def find_reset_link(db: Session, token: str | None) -> ActionToken | None:
    """The live reset link this token belongs to, if any."""
    return links.find(db, PURPOSE, token)


def reset_password(db: Session, settings: Settings, secret_key: str, token: str, password: str) -> Reset:
    """Spend the link and make ``password`` the account's, and record it.

    The password is checked and hashed before the link is spent, which locks the person's row.
    Raises :class:`ResetLinkInvalid` or :class:`~.password_policy.PasswordRejected`; either keeps
    nothing, which leaves a link refused for its password still usable.
    """
    link = find_reset_link(db, token)
    user = db.get(User, link.user_id) if link is not None else None
    if link is None or user is None or user.disabled or user.email != link.email:
        raise ResetLinkInvalid
    new = prepare_password(db, settings, user, password, taken_back=not user.email_verified)
    link = links.spend(db, PURPOSE, token)
    user = db.get(User, link.user_id) if link is not None else None
    if link is None or user is None or user.disabled or user.email != link.email:
        raise ResetLinkInvalid
    if not user.email_verified:
        take_back(db, user)
    try:
        apply_password(db, user, new)
    except AccountChanged:
        # The password changed while this one was checked. The owner's reset must have the last
        # word, or whoever holds a session could keep them out by changing it again and again: it
        # is checked again, under the lock this once, which only such a race costs.
        apply_password(db, user, prepare_password(db, settings, user, password))
    links.cancel(db, user.id)
    ended = sign_out_everywhere(db, user.id)
    user.failed_sign_ins = 0
    user.locked_until = None
    user.email_verified = True
    phone = drop_unconfirmed_phone(user)
    confirm_identity(user)
    notify_password_changed(db, settings, secret_key, user, phone_removed=phone)
    audit.record(db, Event.PASSWORD_RESET, outcome="success", user_id=user.id, detail={"sessions_ended": ended})
    if phone is not None:
        detail = {"phone": mask(phone), "reason": "added_since_confirmation"}
        audit.record(db, Event.PHONE_REMOVED, outcome="success", user_id=user.id, detail=detail)
    db.flush()
    return Reset(user, ended, phone)


def change_password(
    db: Session,
    settings: Settings,
    secret_key: str,
    user: User,
    current_password: str,
    new_password: str,
    keep_session_id: str | None,
    lock: Callable[[], User],
) -> int:
    """A signed-in person changes their password; returns how many other sessions ended.

    The current password is checked and the new one hashed before ``lock`` takes the person's row
    lock and gives the person as they are now (or raises, when the caller may no longer act). The
    session ``keep_session_id`` stays; every other one ends, and every grant not made in the kept
    session is revoked, so an intruder's refresh tokens die even when their session had already run
    out. Raises a :class:`~.reauthentication.NotReauthenticated` (its audit event, and a wrong
    password's count toward the lockout, are already in the transaction: commit to keep them),
    :class:`~.password_policy.PasswordRejected` or :class:`~.errors.AccountChanged` (nothing
    changed).
    """
    try:
        proof = prove(db, settings, secret_key, user, current_password)
    except NotReauthenticated as exc:
        reason = "account_locked" if isinstance(exc, AccountLocked) else "wrong_current_password"
        audit.record(db, Event.PASSWORD_CHANGED, outcome="failure", user_id=user.id, detail={"reason": reason})
        raise
    new = prepare_password(db, settings, user, new_password)
    user = lock()
    confirm(user, proof)
    apply_password(db, user, new)
    ended = sign_out_everywhere(db, user.id, keep_session_id=keep_session_id)
    notify_password_changed(db, settings, secret_key, user)
    audit.record(db, Event.PASSWORD_CHANGED, outcome="success", user_id=user.id, detail={"sessions_ended": ended})
    db.flush()
    return ended


def notify_password_changed(
    db: Session, settings: Settings, secret_key: str, user: User, *, phone_removed: str | None = None
) -> None:
    """Tell the owner's mailbox, with the way back should it not have been them, and the number
    taken off the account with it, masked."""
    if user.email is None:
        return
    enqueue(
        db,
        secret_key,
        Channel.EMAIL,
        user.email,
        "password_changed",
        {
            "when": datetime.fromtimestamp(now(), UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "reset_link": f"{settings.issuer}/password/forgot",
            "phone_removed": mask(phone_removed) if phone_removed else None,
        },
        useful_until=notice_useful_until(),
        locale=user.locale,
    )
