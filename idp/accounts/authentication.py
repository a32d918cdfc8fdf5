"""Password sign-in: one generic failure for every reason a stranger must not learn.

An unknown account, a wrong password, a locked or disabled account all cost one argon2
verification and answer the same. Failures are counted in the database with an atomic
increment, so the count is exact across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..storage import User, now
from .passwords import hash_password, needs_rehash, verify_password
from .users import find_by_identifier

MAX_FAILURES = 5
LOCK_SECONDS = 30 * 60


class Outcome(Enum):
    SIGNED_IN = "signed_in"
    FAILED = "failed"
    EMAIL_NOT_VERIFIED = "email_not_verified"


@dataclass(frozen=True)
class SignInResult:
    outcome: Outcome
    user: User | None = None


def sign_in_with_password(
    db: Session,
    identifier: str,
    password: str,
    *,
    phone_region: str | None,
    require_verified_email: bool,
) -> SignInResult:
    user = find_by_identifier(db, identifier, phone_region) if len(identifier) <= 320 else None
    correct = verify_password(user.password_hash if user else None, password)
    if user is None:
        return SignInResult(Outcome.FAILED)
    stamp = now()
    if user.disabled or (user.locked_until is not None and user.locked_until > stamp):
        return SignInResult(Outcome.FAILED)
    if not correct:
        _count_failure(db, user, stamp)
        return SignInResult(Outcome.FAILED)
    if user.failed_sign_ins or user.locked_until is not None:
        user.failed_sign_ins = 0
        user.locked_until = None
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    if require_verified_email and not user.email_verified:
        return SignInResult(Outcome.EMAIL_NOT_VERIFIED, user)
    return SignInResult(Outcome.SIGNED_IN, user)


def _count_failure(db: Session, user: User, stamp: int) -> None:
    failures = db.execute(
        update(User)
        .where(User.id == user.id)
        .values(failed_sign_ins=User.failed_sign_ins + 1)
        .returning(User.failed_sign_ins)
    ).scalar_one()
    if failures >= MAX_FAILURES:
        db.execute(
            update(User).where(User.id == user.id).values(failed_sign_ins=0, locked_until=stamp + LOCK_SECONDS)
        )
