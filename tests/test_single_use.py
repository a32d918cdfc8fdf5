"""The storage helpers that every single-use thing and every grant revocation go through:
``spend_once`` and ``revoke_grants``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from idp.context import Context
from idp.security.digests import new_id
from idp.storage import Grant, OneTimeCode, now, revoke_grants, spend_once


@pytest.fixture
def code(ctx: Context) -> Iterator[str]:
    """A live one-time code of nobody's, by id."""
    stamp = now()
    code_id = new_id()
    with ctx.db.begin() as db:
        db.add(
            OneTimeCode(
                id=code_id,
                purpose="sign_in",
                identifier=f"{code_id}@example.com",
                code_hash="0" * 64,
                attempts=0,
                created_at=stamp,
                expires_at=stamp + 600,
            )
        )
    yield code_id


def spend(ctx: Context, code_id: str) -> bool:
    with ctx.db.begin() as db:
        return spend_once(db, OneTimeCode, OneTimeCode.id == code_id, OneTimeCode.consumed_at.is_(None), consumed_at=1)


def test_a_thing_is_spent_once(ctx, code):
    assert spend(ctx, code) is True
    assert spend(ctx, code) is False


def test_nothing_to_spend_is_not_spent(ctx):
    assert spend(ctx, "no such code") is False


def spender_behind(ctx: Context, code_id: str) -> tuple[threading.Thread, list[bool]]:
    """A second spender in a thread of its own, started once the caller's UPDATE holds the row."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(spend(ctx, code_id)))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "the second spender did not wait for the first one's transaction"
    return thread, result


@pytest.mark.parametrize(("first_commits", "second_wins"), [(True, False), (False, True)])
def test_of_two_spenders_at_once_the_second_waits_and_wins_only_if_the_first_rolls_back(
    ctx, code, first_commits, second_wins
):
    """Two sessions, two threads: the second UPDATE waits on the first's row (PostgreSQL) or write
    lock (SQLite), then finds the row spent, or, when the first rolled back, spends it itself."""
    with ctx.db() as first:
        assert spend_once(first, OneTimeCode, OneTimeCode.id == code, OneTimeCode.consumed_at.is_(None), consumed_at=1)
        thread, second = spender_behind(ctx, code)
        if first_commits:
            first.commit()
        else:
            first.rollback()
    thread.join(timeout=30)
    assert second == [second_wins]


def test_revoke_grants_revokes_the_selected_live_grants_and_keeps_earlier_revocations(ctx, make_client, make_user):
    client = make_client()
    user = make_user()
    stamp = now()
    ids = {name: new_id() for name in ("selected", "revoked before", "other session")}
    with ctx.db.begin() as db:
        for name, grant_id in ids.items():
            db.add(
                Grant(
                    id=grant_id,
                    client_id=client.client_id,
                    user_id=user.id,
                    session_id="other" if name == "other session" else "this",
                    scope="openid",
                    auth_time=stamp,
                    amr=["pwd"],
                    created_at=stamp,
                    revoked_at=1 if name == "revoked before" else None,
                )
            )
    with ctx.db.begin() as db:
        revoke_grants(db, Grant.user_id == user.id, Grant.session_id == "this")
    with ctx.db() as db:
        revoked = dict(db.execute(select(Grant.id, Grant.revoked_at).where(Grant.user_id == user.id)).all())
    assert revoked[ids["selected"]] is not None and revoked[ids["selected"]] >= stamp
    assert revoked[ids["revoked before"]] == 1
    assert revoked[ids["other session"]] is None
