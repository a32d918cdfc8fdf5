"""Password sign-in: one generic failure for every reason a stranger must not learn.

An unknown account, a wrong password, a locked or disabled account all cost one argon2 verification
(and, while an import's Django-format hashes are left, one of each cost class of those:
:mod:`.legacy_hashes`) and answer the same. A right password checked against a Django-format hash
is replaced by argon2id in the same transaction. Failures are counted in the database with an
atomic increment, so the count is exact across processes. When an account locks, its owner gets an
email, and a password reset or ``idp users unlock`` ends the lock: a lock must never keep the real
owner out for long.
"""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event
from ..messaging.outbox import enqueue, notice_useful_until
from ..metrics import SIGN_INS
from ..settings import Settings
from ..storage import User, now
from ..storage.people_changes import CLAIMS_UNCHANGED
from .codes_vocabulary import Channel
from .confirmation import confirm_identity
from .errors import AccountError, Code
from .legacy_hashes import cost_class_decoys, is_legacy, replaced_legacy_hash
from .passwords import hash_password, needs_rehash, verify_password
from .sign_in_methods import check_password_allowed
from .users import find_by_identifier


class SignInFailed(AccountError):
    """One answer for every reason a stranger must not learn (no such account, a wrong password,
    a locked or disabled account); the reason goes to the audit log only. The failure's count is
    kept."""

    code = Code.SIGN_IN_FAILED
    keeps_changes = True


class EmailNotVerified(AccountError):
    """The password was right, but the deployment asks for a verified email address first."""

    code = Code.EMAIL_NOT_VERIFIED
    keeps_changes = True


def sign_in_with_password(
    db: Session, settings: Settings, secret_key: str, identifier: str, password: str, client_id: str | None
) -> User:
    """The person whose password this is, or :class:`SignInFailed` (:class:`EmailNotVerified`);
    a failure is recorded, for ``client_id``'s sign-in when it is one. With password sign-in off
    nothing is looked up: :class:`~.sign_in_methods.PasswordSignInOff`."""
    check_password_allowed(settings)
    user = find_by_identifier(db, identifier, settings.phone_default_region) if len(identifier) <= 320 else None
    correct = verify_password(user.password_hash if user else None, password[:1024], cost_class_decoys(db))
    if user is None:
        _failed(db, None, client_id, "unknown_account")
    elif user.disabled:
        _failed(db, user, client_id, "disabled")
    elif is_locked(user):
        _failed(db, user, client_id, "locked")
    elif not correct:
        if count_failure(db, settings, secret_key, user):
            _failed(db, user, client_id, "locked_now")
        _failed(db, user, client_id, "wrong_password")
    assert user is not None
    if not user.mfa_method:
        reset_failures(user)
    if user.password_hash and needs_rehash(user.password_hash):
        replaced = user.password_hash
        user.password_hash = hash_password(password)
        if is_legacy(replaced):
            replaced_legacy_hash(db)
    if settings.require_verified_email and not _proven(user):
        _record_failure(db, user, client_id, "email_not_verified")
        raise EmailNotVerified
    confirm_identity(user)
    return user


def _proven(user: User) -> bool:
    """Whether the person showed they hold how they are reached, as ``IDP_REQUIRE_VERIFIED_EMAIL``
    asks: their address, or for a person with no address at all (made with a phone number alone)
    the number."""
    return user.email_verified if user.email is not None else user.phone_verified


def _failed(db: Session, user: User | None, client_id: str | None, reason: str) -> NoReturn:
    _record_failure(db, user, client_id, reason)
    if reason == "locked_now":
        audit.record(db, Event.ACCOUNT_LOCKED, outcome="success", user_id=user.id if user else None)
    raise SignInFailed


def _record_failure(db: Session, user: User | None, client_id: str | None, reason: str) -> None:
    detail = {"method": "password", "reason": reason}
    user_id = user.id if user else None
    audit.record(db, Event.SIGN_IN, outcome="failure", user_id=user_id, client_id=client_id, detail=detail)
    SIGN_INS.labels(method="password", outcome="failure").inc()


def is_locked(user: User) -> bool:
    return user.locked_until is not None and user.locked_until > now()


def lock_minutes(locked_until: int) -> int:
    """Whole minutes until the lock ends, at least one: what a locked person is told."""
    return max(1, -(-(locked_until - now()) // 60))


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
        .execution_options(**{CLAIMS_UNCHANGED: True})
    ).scalar_one_or_none()
    if failures is None or failures < settings.lockout_attempts:
        return False
    locked_until = stamp + settings.lockout_seconds
    db.execute(
        update(User)
        .where(User.id == user.id)
        .values(failed_sign_ins=0, locked_until=locked_until)
        .execution_options(**{CLAIMS_UNCHANGED: True})
    )
    if user.email is None:
        return True
    enqueue(
        db,
        secret_key,
        Channel.EMAIL,
        user.email,
        "account_locked",
        {
            "minutes": settings.lockout_seconds // 60,
            "attempts": settings.lockout_attempts,
            "reset_link": f"{settings.issuer}/password/forgot",
        },
        useful_until=notice_useful_until(),
        locale=user.locale,
    )
    return True
