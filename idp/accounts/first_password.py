"""A first password for an account that signs in with one-time codes only.

Being signed in is not enough: a code goes to the account's verified email address, and the
password is set only with it, so a stolen session cannot give the account a password its owner
does not know. The password policy applies as to every password. A password the policy refuses
rolls back with the code it came with, so the person tries another one with the same code.

Once set, it is a credential change like any other (OWASP ASVS 2.2.3, 3.3.3): every session but
the one that set it ends, with the grants not made in it, and the mailbox is told. The password is
checked and hashed first; then the person's row is locked, so a password set meanwhile (by a reset,
or from another browser) is seen and this one refused as already set.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..context import Context
from ..sso import sign_out_everywhere
from ..storage import OneTimeCode, User, now
from . import otp
from .codes_vocabulary import Channel, Purpose
from .errors import AccountError, Code, WrongCode
from .password_policy import apply_password, prepare_password
from .recovery import notify_password_changed

PURPOSE = Purpose.SET_PASSWORD


class FirstPasswordError(AccountError):
    """A password cannot be set this way."""


class AlreadySet(FirstPasswordError):
    """The account has a password: it is changed with the current one, not set by code."""

    code = Code.PASSWORD_ALREADY_SET


class NoVerifiedEmail(FirstPasswordError):
    """There is no verified address for the code to go to."""

    code = Code.NO_VERIFIED_EMAIL


def destination(user: User) -> str:
    """The verified address the code goes to; raises :class:`FirstPasswordError`."""
    if user.password_hash is not None:
        raise AlreadySet
    if user.email is None or not user.email_verified:
        raise NoVerifiedEmail
    return user.email


def send_code(ctx: Context, db: Session, user: User) -> str:
    """Email a code and return the address; raises :class:`FirstPasswordError` or
    :class:`otp.ResendTooSoon`."""
    email = destination(user)
    otp.send(
        ctx, db, purpose=PURPOSE, channel=Channel.EMAIL, identifier=email, user_id=user.id, template="set_password"
    )
    return email


def code_pending(db: Session, user: User) -> bool:
    """Whether a code for this person is still live (even spent by wrong tries, so the form stays
    to ask for a new one)."""
    stamp = now()
    return (
        db.scalar(
            select(OneTimeCode.id)
            .where(OneTimeCode.user_id == user.id, OneTimeCode.purpose == PURPOSE, OneTimeCode.expires_at > stamp)
            .limit(1)
        )
        is not None
    )


def set_first_password(
    ctx: Context,
    db: Session,
    user: User,
    code: str,
    password: str,
    keep_session_id: str | None,
    lock: Callable[[], User],
) -> int:
    """Make ``password`` the person's when ``code`` is the one emailed to them for it; returns how
    many other sessions ended.

    The password is checked and hashed before ``lock`` takes the person's row lock and gives the
    person as they are now (or raises, when the caller may no longer act); the code is checked
    under it. Raises :class:`FirstPasswordError`, :class:`WrongCode` (commit to keep the try
    counted), or :class:`~.password_policy.PasswordRejected` or :class:`~.errors.AccountChanged`
    (roll back: the code stays usable).
    """
    destination(user)
    new = prepare_password(db, ctx.settings, user, password)
    user = lock()
    email = destination(user)
    spent = otp.verify(ctx, db, purpose=PURPOSE, identifier=email, code=code)
    if spent is None or spent.user_id != user.id:
        raise WrongCode
    apply_password(db, user, new)
    ended = sign_out_everywhere(db, user.id, keep_session_id=keep_session_id)
    notify_password_changed(db, ctx.settings, ctx.secret_key, user)
    return ended
