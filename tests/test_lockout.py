"""Lockout after repeated wrong passwords: the owner's email, the audit trail, the generic answer,
and the ways out of a lock (time, ``idp users unlock``).

The tests run their own app on a database of this module's own, so that only this process's
delivery worker sends the messages the log capture reads.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.accounts.users import create_user
from idp.messaging.worker import deliver_due
from idp.storage import AuditEvent, User, now

from .conftest import PASSWORD, TEST_ISSUER, passwords_hashed_once, run_idp
from .flows import (
    WRONG_PASSWORD,
    alert_text,
    ask_for_code,
    assert_signed_in,
    ctx_of,
    emailed_code,
    enter_code,
    fail_times,
    messages_to,
    post_login,
)
from .services import running_app

LOCKED_SUBJECT = "Subject: Your account is locked for {minutes} minutes"


@pytest.fixture
def site(module_environ: dict[str, str]) -> Iterator[TestClient]:
    with running_app(module_environ) as client:
        yield client


@pytest.fixture(autouse=True)
def _messages_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="idp.messages")


def add_user(client: TestClient, **kwargs: Any) -> User:
    kwargs.setdefault("email", f"lock-{secrets.token_hex(5)}@example.com")
    kwargs.setdefault("password", PASSWORD)
    kwargs.setdefault("verified", True)
    with ctx_of(client).db.begin() as db, passwords_hashed_once():
        user = create_user(db, **kwargs)
        db.expunge(user)
        return user


def stored(client: TestClient, user_id: str) -> User:
    with ctx_of(client).db() as db:
        user = db.get_one(User, user_id)
        db.expunge(user)
        return user


def lock_emails(client: TestClient, caplog: pytest.LogCaptureFixture, email: str, *, awaited: int = 0) -> list[str]:
    """The lock notices sent to ``email``, once ``awaited`` of them have gone (or 5 s have passed): the
    app's own delivery worker may have claimed a message and be sending it while we look."""
    deadline = time.monotonic() + 5
    while True:
        deliver_due(ctx_of(client))
        sent = [
            r.getMessage()
            for r in caplog.records
            if r.name == "idp.messages"
            and r.getMessage().startswith(f"email to {email}\nSubject: Your account is locked")
        ]
        if len(sent) >= awaited or time.monotonic() > deadline:
            return sent
        time.sleep(0.05)


def events(client: TestClient, user_id: str) -> list[AuditEvent]:
    with ctx_of(client).db() as db:
        found = list(db.scalars(select(AuditEvent).where(AuditEvent.user_id == user_id).order_by(AuditEvent.id)))
        db.expunge_all()
        return found


# --- locking ------------------------------------------------------------------------------------


def test_five_failures_lock_and_email_the_owner(site, caplog):
    user = add_user(site)
    fail_times(site, user.email, 4)
    assert lock_emails(site, caplog, user.email) == []
    assert stored(site, user.id).locked_until is None

    fail_times(site, user.email, 1)
    locked_until = stored(site, user.id).locked_until
    assert locked_until is not None and locked_until - now() in range(1795, 1801)
    (email,) = lock_emails(site, caplog, user.email, awaited=1)
    assert LOCKED_SUBJECT.format(minutes=30) in email
    assert "5 times in a row" in email
    assert f"{TEST_ISSUER}/password/forgot" in email
    assert PASSWORD not in email and WRONG_PASSWORD not in email

    (locked_event,) = [e for e in events(site, user.id) if e.event == "account_locked"]
    assert locked_event.outcome == "success"


def test_failures_during_a_lock_send_no_more_email(site, caplog):
    user = add_user(site)
    fail_times(site, user.email, 5)
    fail_times(site, user.email, 5)
    assert len(lock_emails(site, caplog, user.email, awaited=1)) == 1
    assert messages_to(site, user.email) == 1
    assert [e.event for e in events(site, user.id)].count("account_locked") == 1


def test_a_locked_account_answers_exactly_like_a_wrong_password(site):
    user = add_user(site)
    wrong = post_login(site, user.email, WRONG_PASSWORD)
    fail_times(site, user.email, 4)
    right_while_locked = post_login(site, user.email, PASSWORD)
    wrong_while_locked = post_login(site, user.email, WRONG_PASSWORD)
    for response in (right_while_locked, wrong_while_locked):
        assert response.status_code == wrong.status_code == 400
        assert response.text == wrong.text
        assert "location" not in response.headers
        assert not any(c.startswith("idp_session=") for c in response.headers.get_list("set-cookie"))
    assert "lock" not in alert_text(right_while_locked).lower()


def test_an_account_without_email_locks_without_a_message(site):
    phone = f"+98912{secrets.randbelow(10**7):07d}"
    with ctx_of(site).db.begin() as db:
        user_id = create_user(db, phone=phone, password=PASSWORD, verified=True).id
    fail_times(site, phone, 5)
    assert post_login(site, phone, PASSWORD).status_code == 400
    assert stored(site, user_id).locked_until is not None
    assert messages_to(site, phone) == 0


# --- ways out -----------------------------------------------------------------------------------


def test_the_lock_ends_after_lockout_seconds(site):
    user = add_user(site)
    fail_times(site, user.email, 5)
    assert post_login(site, user.email, PASSWORD).status_code == 400
    with ctx_of(site).db.begin() as db:
        db.execute(update(User).where(User.id == user.id).values(locked_until=now() - 1))
    assert_signed_in(post_login(site, user.email, PASSWORD))
    assert stored(site, user.id).locked_until is None


def test_idp_users_unlock_ends_the_lock(site, module_environ):
    user = add_user(site)
    fail_times(site, user.email, 5)
    assert post_login(site, user.email, PASSWORD).status_code == 400
    result = run_idp(module_environ, "users", "unlock", user.id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"id": user.id, "unlocked": True}
    assert_signed_in(post_login(site, user.email, PASSWORD))


def test_a_right_code_does_not_sign_in_while_locked(site, caplog):
    """A lock holds for every way of signing in; the owner, who alone holds the code, is told why
    and how to end it."""
    user = add_user(site)
    fail_times(site, user.email, 5)
    assert ask_for_code(site, user.email).status_code == 303
    response = enter_code(site, emailed_code(site, caplog, user.email))
    assert response.status_code == 400
    assert not any(c.startswith("idp_session=") for c in response.headers.get_list("set-cookie"))
    assert alert_text(response).startswith("Too many failed sign-ins: your account is locked for 30 more minutes.")
    assert "Resetting your password ends the lock" in alert_text(response)


# --- settings -----------------------------------------------------------------------------------


def test_custom_attempts_and_seconds(module_environ, caplog):
    with running_app(module_environ, IDP_LOCKOUT_ATTEMPTS="3", IDP_LOCKOUT_SECONDS="120") as client:
        user = add_user(client)
        fail_times(client, user.email, 2)
        assert stored(client, user.id).locked_until is None
        fail_times(client, user.email, 1)
        locked_until = stored(client, user.id).locked_until
        assert locked_until is not None and locked_until - now() in range(115, 121)
        assert post_login(client, user.email, PASSWORD).status_code == 400
        (email,) = lock_emails(client, caplog, user.email, awaited=1)
        assert LOCKED_SUBJECT.format(minutes=2) in email
        assert "3 times in a row" in email


# --- audit --------------------------------------------------------------------------------------


def test_failed_sign_ins_are_audited_with_a_reason_and_no_password(site):
    user = add_user(site)
    fail_times(site, user.email, 5)
    post_login(site, user.email, PASSWORD)
    recorded = events(site, user.id)
    failures = [e for e in recorded if e.event == "sign_in" and e.outcome == "failure"]
    assert [e.detail["reason"] for e in failures] == ["wrong_password"] * 4 + ["locked_now", "locked"]
    assert all(e.detail["method"] == "password" for e in failures)
    assert all(e.ip and e.user_agent for e in failures)
    for event in recorded:
        text = json.dumps([event.detail, event.user_agent, event.ip, event.event])
        assert PASSWORD not in text and WRONG_PASSWORD not in text

    nobody = f"nobody-{secrets.token_hex(4)}@example.com"
    post_login(site, nobody, WRONG_PASSWORD)
    with ctx_of(site).db() as db:
        latest = db.scalars(
            select(AuditEvent).where(AuditEvent.event == "sign_in").order_by(AuditEvent.id.desc())
        ).first()
    assert latest is not None and latest.user_id is None
    assert latest.detail == {"method": "password", "reason": "unknown_account"}
    assert nobody not in json.dumps(latest.detail)
