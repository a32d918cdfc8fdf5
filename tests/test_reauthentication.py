"""The one "confirm it is you" check that a new password, a new email address and second-factor
changes share: what each accepts in place of the password, and how wrong passwords lock.

The pages and the API that call it are tested in tests/test_account*.py and
tests/test_second_factor.py; this walks through the check's own cases on the suite's database.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from idp.accounts.errors import AccountChanged
from idp.accounts.reauthentication import (
    REAUTH_WINDOW,
    AccountLocked,
    NotReauthenticated,
    RecentSignIn,
    WrongPassword,
    confirm,
    prove,
)
from idp.accounts.users import lock_user
from idp.context import Context
from idp.storage import OutboxMessage, User, now

from .conftest import PASSWORD

RECENT = 60
OLD = REAUTH_WINDOW + 60


def check(ctx: Context, user_id: str, password: str, policy: RecentSignIn, signed_in_ago: int | None) -> str:
    """What the check answered (``"ok"`` or the exception's name); whatever it wrote is committed,
    as the callers commit a refusal."""
    auth_time = None if signed_in_ago is None else now() - signed_in_ago
    with ctx.db() as db:
        user = db.get_one(User, user_id)
        try:
            proof = prove(db, ctx.settings, ctx.secret_key, user, password, recent_sign_in=policy, auth_time=auth_time)
            confirm(lock_user(db, user_id) or user, proof)
            return "ok"
        except NotReauthenticated as exc:
            assert str(exc), "the message is for the person"
            return type(exc).__name__
        finally:
            db.commit()


def failures(ctx: Context, user_id: str) -> int:
    with ctx.db() as db:
        return db.get_one(User, user_id).failed_sign_ins


@pytest.mark.parametrize(
    ("policy", "signed_in_ago", "password", "answer"),
    [
        (RecentSignIn.ALWAYS, RECENT, "", "ok"),
        (RecentSignIn.ALWAYS, OLD, PASSWORD, "ok"),
        (RecentSignIn.ALWAYS, OLD, "", "WrongPassword"),
        (RecentSignIn.ALWAYS, None, "not it", "WrongPassword"),
        (RecentSignIn.WITHOUT_PASSWORD, RECENT, "", "WrongPassword"),
        (RecentSignIn.WITHOUT_PASSWORD, RECENT, PASSWORD, "ok"),
        (RecentSignIn.NEVER, RECENT, "", "WrongPassword"),
        (RecentSignIn.NEVER, None, PASSWORD, "ok"),
    ],
)
def test_an_account_with_a_password(ctx, make_user, policy, signed_in_ago, password, answer):
    person = make_user()
    assert check(ctx, person.id, password, policy, signed_in_ago) == answer
    assert failures(ctx, person.id) == (1 if answer == "WrongPassword" else 0)


@pytest.mark.parametrize(
    ("policy", "signed_in_ago", "answer"),
    [
        (RecentSignIn.ALWAYS, RECENT, "ok"),
        (RecentSignIn.ALWAYS, OLD, "SignInTooOld"),
        (RecentSignIn.WITHOUT_PASSWORD, RECENT, "ok"),
        (RecentSignIn.WITHOUT_PASSWORD, OLD, "SignInTooOld"),
        (RecentSignIn.WITHOUT_PASSWORD, None, "SignInTooOld"),
        (RecentSignIn.NEVER, RECENT, "WrongPassword"),
    ],
)
def test_an_account_without_a_password(ctx, make_user, policy, signed_in_ago, answer):
    """A new password never takes a sign-in instead: a first password needs an emailed code."""
    person = make_user(password=None)
    assert check(ctx, person.id, "anything", policy, signed_in_ago) == answer


def test_wrong_passwords_lock_and_then_none_is_checked(ctx, make_user):
    person = make_user()
    for _ in range(ctx.settings.lockout_attempts):
        assert check(ctx, person.id, "not it", RecentSignIn.NEVER, None) == WrongPassword.__name__
    with ctx.db() as db:
        user = db.get_one(User, person.id)
        assert user.locked_until is not None and user.locked_until > now()
        assert user.failed_sign_ins == 0, "the lock took the count"
        queued = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.recipient == person.email)
        assert db.scalar(queued) == 1, "the owner is told"
    assert check(ctx, person.id, PASSWORD, RecentSignIn.NEVER, None) == AccountLocked.__name__
    assert check(ctx, person.id, PASSWORD, RecentSignIn.WITHOUT_PASSWORD, RECENT) == AccountLocked.__name__
    assert failures(ctx, person.id) == 0, "a refusal while locked counts nothing"


def test_a_recent_sign_in_is_enough_for_the_second_factor_even_while_locked(ctx, make_user):
    """As before the check was shared: the lock guards the password, and a sign-in minutes ago
    needs none."""
    person = make_user()
    with ctx.db.begin() as db:
        db.execute(update(User).where(User.id == person.id).values(locked_until=now() + 600))
    assert check(ctx, person.id, "", RecentSignIn.ALWAYS, RECENT) == "ok"
    assert check(ctx, person.id, PASSWORD, RecentSignIn.ALWAYS, OLD) == AccountLocked.__name__


def test_a_proof_made_before_the_lock_is_checked_against_the_account_as_it_is_now(ctx, make_user):
    """The proof is made without the person's row lock, from the object as it was loaded; under
    the lock the row is read again, and a password set by another transaction meanwhile voids a
    proof that a recent sign-in alone made."""
    person, donor = make_user(password=None), make_user()
    with ctx.db() as db:
        user = db.get_one(User, person.id)
        assert user.password_hash is None
        proof = prove(
            db,
            ctx.settings,
            ctx.secret_key,
            user,
            "not it",
            recent_sign_in=RecentSignIn.WITHOUT_PASSWORD,
            auth_time=now(),
        )
        with ctx.db.begin() as other:
            other.get_one(User, person.id).password_hash = other.get_one(User, donor.id).password_hash
        locked = lock_user(db, person.id)
        assert locked is not None
        with pytest.raises(AccountChanged):
            confirm(locked, proof)
        db.rollback()
