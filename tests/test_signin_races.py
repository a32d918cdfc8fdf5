"""A sign-in by code at the same moment as an action that changes the account or ends its sessions,
each in a request (or command) of its own: an email change (which cancels the codes sent to the old
address), a password reset (which ends every session) and disabling the account.

The sign-in takes the person's row lock before it spends its code, as every such action does, so on
PostgreSQL the two run one after the other: were the sign-in to hold its code row while it waits to
store its session, an email change holding the person and waiting to cancel that code would
deadlock with it. Every answer must be one the request gets when it runs alone just before or just
after the other, and the final state must agree with it: no session left live for a disabled
person, none from a code that the other action cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from idp.accounts import challenges, email_change, otp, recovery
from idp.accounts.users import disable_user
from idp.context import Context
from idp.storage import AuditEvent, BrowserSession, OneTimeCode, User

from .conftest import PASSWORD
from .flows import alert_text, ask_for_code, follow_email_change_link, hidden_fields, post_login
from .test_account_races import (
    NEW_PASSWORD,
    ROUNDS,
    link,
    look_idle,
    password_is,
    queued_to,
    refused_link,
    reset_form,
    sign_in_by_session,
    stored,
    succeeded,
)

WRONG_CODE = "That code is not right, or it has expired. Check it, or ask for a new one."


def race(*runs: Callable[[], Any]) -> list[Any]:
    """Run each in a thread of its own, released together by a barrier; no exception, no 5xx."""
    start = threading.Barrier(len(runs))
    answers: list[Any] = [None] * len(runs)
    failures: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            start.wait(timeout=10)
            answers[index] = call()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    for answer in answers:
        if isinstance(answer, httpx.Response):
            assert answer.status_code < 500, answer.text
    return answers


def code_form(ctx: Context, browser: TestClient, *, purpose: str, identifier: str, user_id: str) -> Callable[[], Any]:
    """The code page of the browser's sign-in under way, filled in with a code known to the test
    (it replaces the one sent), ready to submit."""
    with ctx.db.begin() as db:
        issued = otp.issue(ctx, db, purpose=purpose, identifier=identifier, user_id=user_id)
    page = browser.get("/login/verify")
    assert page.status_code == 200, page.text
    data = {**hidden_fields(page.text), "code": issued.code}
    return lambda: browser.post("/login/verify", data=data)


def passwordless(ctx: Context, browser: TestClient, email: str, user_id: str) -> Callable[[], Any]:
    asked = ask_for_code(browser, email)
    assert asked.status_code == 303, asked.text
    return code_form(ctx, browser, purpose=challenges.SIGN_IN, identifier=email, user_id=user_id)


def second_factor(ctx: Context, browser: TestClient, email: str, user_id: str) -> Callable[[], Any]:
    with ctx.db.begin() as db:
        db.get_one(User, user_id).mfa_method = "email"
    answer = post_login(browser, email, PASSWORD)
    assert answer.status_code == 303 and answer.headers["location"] == "/login/verify", answer.text
    return code_form(ctx, browser, purpose=challenges.SECOND_FACTOR, identifier=email, user_id=user_id)


def signed_in(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"] == "/account"


def refused_code(answer: httpx.Response) -> bool:
    return answer.status_code == 400 and alert_text(answer) == WRONG_CODE


def live_sessions(ctx: Context, user_id: str) -> int:
    with ctx.db() as db:
        query = select(func.count()).where(BrowserSession.user_id == user_id, BrowserSession.ended_at.is_(None))
        return db.scalar(query.select_from(BrowserSession)) or 0


SIGN_INS = {"passwordless": passwordless, "second_factor": second_factor}


@pytest.mark.parametrize("kind", SIGN_INS)
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_code_sign_in_and_an_email_change_at_once(ctx, make_user, browsers, kind, round_):
    """The change cancels every code sent to the old address: the sign-in either spent its code
    first and is signed in, or finds it cancelled. Never a deadlock."""
    person = make_user()
    moved = f"moved-{person.id}@example.org"
    signer = browsers()
    send_code = SIGN_INS[kind](ctx, signer, person.email, person.id)
    change_link = link(ctx, email_change.PURPOSE, person.id, moved)
    mailbox = browsers()
    change_path = f"/account/email/confirm?token={change_link}"
    sign_in_answer, change_answer = race(send_code, lambda: follow_email_change_link(mailbox, change_path))
    assert succeeded(change_answer, f"Your email address is now {moved}"), change_answer.text
    assert stored(ctx, person.id).email == moved
    if signed_in(sign_in_answer):
        assert live_sessions(ctx, person.id) == 1
    else:
        assert refused_code(sign_in_answer), sign_in_answer.text
        assert live_sessions(ctx, person.id) == 0


@pytest.mark.parametrize("kind", SIGN_INS)
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_code_sign_in_and_a_password_reset_at_once(ctx, make_user, browsers, kind, round_):
    """The browser signing in again holds a session of the person's already, which its sign-in
    ends and the reset ends too. The reset has the last word on sessions that began before it:
    a sign-in that finished first is ended by it, one that waited for it begins afterwards."""
    person = make_user()
    signer = browsers()
    sign_in_by_session(ctx, signer, person.id)
    send_code = SIGN_INS[kind](ctx, signer, person.email, person.id)
    reset = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email))
    look_idle(ctx, person.id)
    sign_in_answer, reset_answer = race(send_code, reset)
    assert succeeded(reset_answer, "Password changed"), reset_answer.text
    assert signed_in(sign_in_answer), sign_in_answer.text
    assert password_is(ctx, person.id, NEW_PASSWORD)
    assert live_sessions(ctx, person.id) <= 1


@pytest.mark.parametrize("kind", SIGN_INS)
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_code_sign_in_while_the_account_is_disabled(ctx, make_user, browsers, kind, round_):
    """``idp users disable`` at the moment a code is entered: the sign-in either finished first and
    its session is ended with the rest, or it is refused. No live session is left either way."""
    person = make_user()
    signer = browsers()
    sign_in_by_session(ctx, signer, person.id)
    send_code = SIGN_INS[kind](ctx, signer, person.email, person.id)
    look_idle(ctx, person.id)

    def disable() -> None:
        with ctx.db.begin() as db:
            disable_user(db, person.id)

    sign_in_answer, _ = race(send_code, disable)
    assert signed_in(sign_in_answer) or refused_code(sign_in_answer), sign_in_answer.text
    assert stored(ctx, person.id).disabled
    assert live_sessions(ctx, person.id) == 0


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_disabling_while_a_reset_ends_the_sessions(ctx, make_user, browsers, round_):
    """Both end every session of the person's; they queue on the person instead of ending them in
    opposite orders. The reset of a disabled account is refused."""
    person = make_user()
    for _ in range(4):
        sign_in_by_session(ctx, browsers(), person.id)
    reset = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email))

    def disable() -> None:
        with ctx.db.begin() as db:
            disable_user(db, person.id)

    reset_answer, _ = race(reset, disable)
    assert succeeded(reset_answer, "Password changed") or refused_link(reset_answer), reset_answer.text
    assert stored(ctx, person.id).disabled
    assert live_sessions(ctx, person.id) == 0


@pytest.mark.parametrize("kind", SIGN_INS)
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_asking_for_a_new_code_while_the_email_changes(ctx, make_user, browsers, kind, round_):
    """A resend replaces the code sent before (a row the change cancels) and stores one referring
    to the person. A resend that went first sends its code, which the change then cancels; one
    that waited for the change sends nothing to the address that is no longer the person's, and
    records no ``code_sent``."""
    person = make_user()
    moved = f"moved-{person.id}@example.org"
    signer = browsers()
    SIGN_INS[kind](ctx, signer, person.email, person.id)
    page = signer.get("/login/verify")
    resend_data = hidden_fields(page.text)
    change_link = link(ctx, email_change.PURPOSE, person.id, moved)
    mailbox = browsers()
    before = queued_to(ctx, person.email)
    codes_sent = events_in_order(ctx, person.id, ["code_sent"])
    resend_answer, change_answer = race(
        lambda: signer.post("/login/verify/resend", data=resend_data),
        lambda: follow_email_change_link(mailbox, f"/account/email/confirm?token={change_link}"),
    )
    assert succeeded(resend_answer, "We sent you a new code."), resend_answer.text
    assert succeeded(change_answer, f"Your email address is now {moved}"), change_answer.text
    resent_first = events_in_order(ctx, person.id, ["code_sent"]) != codes_sent
    assert queued_to(ctx, person.email) == before + (2 if resent_first else 1), "the change notice, and the code?"
    assert live_codes(ctx, person.email) == (0 if resent_first else 1), "cancelled, or made but never sent"


@pytest.mark.parametrize("kind", SIGN_INS)
def test_a_code_for_an_address_no_longer_the_persons_does_not_sign_in(ctx, make_user, browsers, kind):
    """A sign-in begun before an email change: a code sent to the old address afterwards (a resend
    that found the address changed is made all the same, to answer alike) signs no one in."""
    person = make_user()
    moved = f"moved-{person.id}@example.org"
    signer = browsers()
    SIGN_INS[kind](ctx, signer, person.email, person.id)
    change_path = f"/account/email/confirm?token={link(ctx, email_change.PURPOSE, person.id, moved)}"
    changed = follow_email_change_link(browsers(), change_path)
    assert succeeded(changed, f"Your email address is now {moved}"), changed.text
    purpose = challenges.SIGN_IN if kind == "passwordless" else challenges.SECOND_FACTOR
    answer = code_form(ctx, signer, purpose=purpose, identifier=person.email, user_id=person.id)()
    assert refused_code(answer), answer.text
    assert live_sessions(ctx, person.id) == 0


def events_in_order(ctx: Context, user_id: str, names: list[str]) -> list[str]:
    with ctx.db() as db:
        query = select(AuditEvent.event).where(AuditEvent.user_id == user_id, AuditEvent.event.in_(names))
        return list(db.scalars(query.order_by(AuditEvent.id)))


def live_codes(ctx: Context, identifier: str) -> int:
    with ctx.db() as db:
        query = select(func.count()).select_from(OneTimeCode)
        query = query.where(OneTimeCode.identifier == identifier, OneTimeCode.consumed_at.is_(None))
        return db.scalar(query) or 0
