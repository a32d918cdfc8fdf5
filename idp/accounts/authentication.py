"""Password sign-in: one generic failure for every reason a stranger must not learn.

An unknown account, a wrong password, a locked or disabled account all cost one argon2
verification and answer the same. Failures are counted in the database with an atomic
increment, so the count is exact across processes. When an account locks, its owner gets an
email, and a password reset or ``idp users unlock`` ends the lock: a lock must never keep the
real owner out for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from ..messaging.outbox import enqueue_email, notice_useful_until
from ..settings import Settings
from ..storage import User, now
from .confirmation import confirm_identity
from .passwords import hash_password, needs_rehash, verify_password
from .users import find_by_identifier


class Outcome(Enum):
    SIGNED_IN = "signed_in"
    FAILED = "failed"
    EMAIL_NOT_VERIFIED = "email_not_verified"


@dataclass(frozen=True)
class SignInResult:
    outcome: Outcome
    user: User | None = None
    reason: str = ""


def sign_in_with_password(
    db: Session, settings: Settings, secret_key: str, identifier: str, password: str
) -> SignInResult:
    """``reason`` is for the audit log only, never for the person."""
    user = find_by_identifier(db, identifier, settings.phone_default_region) if len(identifier) <= 320 else None
    correct = verify_password(user.password_hash if user else None, password[:1024])
    if user is None:
        return SignInResult(Outcome.FAILED, reason="unknown_account")
    if user.disabled:
        return SignInResult(Outcome.FAILED, user, "disabled")
    if is_locked(user):
        return SignInResult(Outcome.FAILED, user, "locked")
    if not correct:
        locked = count_failure(db, settings, secret_key, user)
        return SignInResult(Outcome.FAILED, user, "locked_now" if locked else "wrong_password")
    if not user.mfa_method:
        reset_failures(user)
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    if settings.require_verified_email and not user.email_verified:
        return SignInResult(Outcome.EMAIL_NOT_VERIFIED, user, "email_not_verified")
    confirm_identity(user)
    return SignInResult(Outcome.SIGNED_IN, user)


def is_locked(user: User) -> bool:
    return user.locked_until is not None and user.locked_until > now()


def reset_failures(user: User) -> None:
    """A whole sign-in succeeded: with a second factor, only once that factor was right too."""
    if user.failed_sign_ins or user.locked_until is not None:
        user.failed_sign_ins = 0
        user.locked_until = None


def count_failure(db: Session, settings: Settings, secret_key: str, user: User) -> bool:
    """Count one failed proof of identity (a password, a one-time or second-factor code, a
    re-entered current password); lock and tell the owner when it is one too many. True when it
    locked. Failures during a lock are not counted: the lock already holds, and its owner was told
    once."""
    stamp = now()
    failures = db.execute(
        update(User)
        .where(User.id == user.id, or_(User.locked_until.is_(None), User.locked_until <= stamp))
        .values(failed_sign_ins=User.failed_sign_ins + 1)
        .returning(User.failed_sign_ins)
    ).scalar_one_or_none()
    if failures is None or failures < settings.lockout_attempts:
        return False
    locked_until = stamp + settings.lockout_seconds
    db.execute(update(User).where(User.id == user.id).values(failed_sign_ins=0, locked_until=locked_until))
    if user.email is None:
        return True
    enqueue_email(
        db,
        secret_key,
        user.email,
        "account_locked",
        {
            "minutes": settings.lockout_seconds // 60,
            "attempts": settings.lockout_attempts,
            "reset_link": f"{settings.issuer}/password/forgot",
        },
        useful_until=notice_useful_until(),
    )
    return True
