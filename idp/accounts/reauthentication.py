"""Asking a signed-in person to show again that it is them, before a change that would otherwise
hand the account to whoever holds the session: a new password, a new email address or phone
number, turning two-step sign-in on or off, new recovery codes.

One check serves them all; they differ only in whether a recent sign-in (within
``REAUTH_WINDOW``) may stand in for the current password (:class:`RecentSignIn`). A wrong
password counts toward the lockout as one at sign-in does, and while the account is locked no
password is checked at all: otherwise a borrowed session could go on guessing here where sign-in
stops.

A right password is noted as the person's latest confirmation (:mod:`.confirmation`); a recent
sign-in standing in for it is not, since a stolen session carries it too.

:func:`reauthenticate` locks the person's row first (:func:`~.users.lock_user`), so the check reads
the account as it is now (a reset a moment ago may have changed the password or ended the lock),
and the change that follows happens under the same lock. A change whose own work is slow (a new
password: hashing, the breach check) calls :func:`prove` before it takes the lock instead, and once
it holds the lock makes sure the password it proved is still the person's
(:func:`~.password_policy.apply_password`).
"""

from __future__ import annotations

from enum import Enum

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..settings import Settings
from ..storage import User, now
from .authentication import count_failure
from .confirmation import confirm_identity
from .errors import AccountError, Code
from .passwords import verify_password
from .users import lock_user

REAUTH_WINDOW = 5 * 60
MAX_PASSWORD_INPUT = 1024


class RecentSignIn(Enum):
    """Whether a sign-in within ``REAUTH_WINDOW`` may stand in for the current password."""

    NEVER = "never"
    """A new password: only the current one proves the person, and a passwordless account sets
    its first with an emailed code instead (:mod:`.first_password`)."""
    WITHOUT_PASSWORD = "without_password"
    """A new email address or phone number: an account with a password gives it; one without shows
    a recent sign-in."""
    ALWAYS = "always"
    """The second factor: a sign-in a few minutes ago checked every factor the account has."""


class NotReauthenticated(AccountError):
    """The person did not show it is them; ``reason`` goes in the audit log as it is. What the
    request wrote is kept: the failure's audit event, and a wrong password's count."""

    keeps_changes = True


class WrongPassword(NotReauthenticated):
    """The current password was missing or wrong; the try counted toward the lockout."""

    code = Code.WRONG_PASSWORD

    def __init__(self) -> None:
        super().__init__("wrong_password")


class AccountLocked(NotReauthenticated):
    """Wrong passwords locked the account, so none is checked until the lock ends (``minutes``)."""

    code = Code.ACCOUNT_LOCKED

    def __init__(self, locked_until: int) -> None:
        super().__init__("account_locked", minutes=max(1, -(-(locked_until - now()) // 60)))


class SignInTooOld(NotReauthenticated):
    """The account has no password to give, and the session did not sign in recently."""

    code = Code.SIGN_IN_REQUIRED

    def __init__(self) -> None:
        super().__init__("sign_in_too_old")


def signed_in_recently(auth_time: int | None) -> bool:
    return auth_time is not None and now() - auth_time < REAUTH_WINDOW


def reauthenticate(
    db: Session,
    settings: Settings,
    secret_key: str,
    user: User,
    password: str,
    *,
    recent_sign_in: RecentSignIn = RecentSignIn.NEVER,
    auth_time: int | None = None,
) -> None:
    """Lock the person's row, then return if they showed it is them; raise a
    :class:`NotReauthenticated` otherwise.

    ``auth_time`` is when the session signed in (``None``: unknown). After :class:`WrongPassword`
    the failure's count (and the lock and its email, when it locked) is in the transaction:
    commit to keep it.
    """
    lock_user(db, user.id)
    if signed_in_recently(auth_time) and (
        recent_sign_in is RecentSignIn.ALWAYS
        or (recent_sign_in is RecentSignIn.WITHOUT_PASSWORD and user.password_hash is None)
    ):
        return
    if user.password_hash is None and recent_sign_in is not RecentSignIn.NEVER:
        raise SignInTooOld
    prove(db, settings, secret_key, user, password)
    confirm_identity(user)


def prove(db: Session, settings: Settings, secret_key: str, user: User, password: str) -> None:
    """Return if ``password`` is the person's as ``user`` was read; raise a
    :class:`NotReauthenticated` otherwise. Writes nothing on success, so it needs no lock: the
    caller notes the confirmation (:func:`~.confirmation.confirm_identity`) once it holds one.

    A wrong password is counted by one atomic increment (:func:`~.authentication.count_failure`),
    exact however many guesses run at once; one that finds the account locked meanwhile by another
    is answered as a locked account, as it would have been a moment later.
    """
    if user.locked_until is not None and user.locked_until > now():
        raise AccountLocked(user.locked_until)
    if verify_password(user.password_hash, password[:MAX_PASSWORD_INPUT]):
        return
    if count_failure(db, settings, secret_key, user):
        raise WrongPassword
    locked_until = db.scalar(select(User.locked_until).where(User.id == user.id))
    if locked_until is not None and locked_until > now():
        raise AccountLocked(locked_until)
    raise WrongPassword
