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

:func:`prove` checks without the person's row lock: a password is an argon2 verification, which
must not hold up every other action on the account. Once the caller holds the lock
(:func:`~.users.lock_user`), :func:`confirm` makes sure the proof still holds: the password it
was checked against is still the person's (a reset or a change a moment ago may have replaced it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..settings import Settings
from ..storage import User, now
from .authentication import count_failure, lock_minutes
from .confirmation import confirm_identity
from .errors import AccountChanged, AccountError, Code
from .passwords import verify_password

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

    fixed_reason = "wrong_password"


class AccountLocked(NotReauthenticated):
    """Wrong passwords locked the account, so none is checked until the lock ends (``minutes``)."""

    code = Code.ACCOUNT_LOCKED

    def __init__(self, locked_until: int) -> None:
        super().__init__("account_locked", minutes=lock_minutes(locked_until))


class SignInTooOld(NotReauthenticated):
    """The account has no password to give, and the session did not sign in recently."""

    code = Code.SIGN_IN_REQUIRED

    fixed_reason = "sign_in_too_old"


def signed_in_recently(auth_time: int | None) -> bool:
    return auth_time is not None and now() - auth_time < REAUTH_WINDOW


@dataclass(frozen=True)
class Proof:
    """That the person showed it is them: against which password (``None``: the account had none),
    and whether by giving it (rather than by a recent sign-in)."""

    password_hash: str | None
    by_password: bool


def prove(
    db: Session,
    settings: Settings,
    secret_key: str,
    user: User,
    password: str,
    *,
    recent_sign_in: RecentSignIn = RecentSignIn.NEVER,
    auth_time: int | None = None,
) -> Proof:
    """The proof that the person as ``user`` was read showed it is them, or a
    :class:`NotReauthenticated`. Writes nothing on success, so it needs no lock; :func:`confirm`
    it once the lock is held.

    ``auth_time`` is when the session signed in (``None``: unknown). A wrong password is counted by
    one atomic increment (:func:`~.authentication.count_failure`), exact however many guesses run at
    once; one that finds the account locked meanwhile by another is answered as a locked account,
    as it would have been a moment later. After :class:`WrongPassword` the failure's count (and
    the lock and its email, when it locked) is in the transaction: commit to keep it.
    """
    if signed_in_recently(auth_time) and (
        recent_sign_in is RecentSignIn.ALWAYS
        or (recent_sign_in is RecentSignIn.WITHOUT_PASSWORD and user.password_hash is None)
    ):
        return Proof(user.password_hash, by_password=False)
    if user.password_hash is None and recent_sign_in is not RecentSignIn.NEVER:
        raise SignInTooOld
    if user.locked_until is not None and user.locked_until > now():
        raise AccountLocked(user.locked_until)
    if verify_password(user.password_hash, password[:MAX_PASSWORD_INPUT]):
        return Proof(user.password_hash, by_password=True)
    if count_failure(db, settings, secret_key, user):
        raise WrongPassword
    locked_until = db.scalar(select(User.locked_until).where(User.id == user.id))
    if locked_until is not None and locked_until > now():
        raise AccountLocked(locked_until)
    raise WrongPassword


def confirm(user: User, proof: Proof) -> None:
    """Under the person's row lock, with ``user`` as it is now: raise
    :class:`~.errors.AccountChanged` when the password ``proof`` was checked against is no longer
    theirs; note a right password as the person's latest confirmation."""
    if user.password_hash != proof.password_hash:
        raise AccountChanged
    if proof.by_password:
        confirm_identity(user)
