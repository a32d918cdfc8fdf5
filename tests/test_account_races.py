"""Two actions on one account at the same moment, each in a request of its own, as two browsers (or
a browser and a mail link) send them: password reset, email change confirmation, password change,
first password, phone removal, turning the second factor off.

Each action takes the person's row lock before anything else, so on PostgreSQL the two run one
after the other instead of locking rows in opposite orders and deadlocking (which PostgreSQL ends
by aborting one of them: a 503). Every answer must be one that action gets when it runs alone just
after the other: a success, a spent link, a session the other ended, "nothing left to remove";
never a 5xx, and never both when only one can have happened. On SQLite the database's one write
lock serializes them the same way.

Sessions are made to look idle for a while first where a race needs it: the request then writes
the session's last-seen time too, a row the other action (ending sessions) also locks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.accounts import email_change, first_password, links, otp, recovery, totp
from idp.accounts.passwords import verify_password
from idp.context import Context
from idp.sso import start_session
from idp.storage import AuditEvent, BrowserSession, OutboxMessage, User
from idp.web.browser import SESSION_COOKIE

from .conftest import PASSWORD
from .flows import alert_text, authorize_params, follow_email_change_link, hidden_fields, pkce_pair, tokens_for
from .test_account import random_phone, sign_in

NEW_PASSWORD = "a brand new passphrase 42"
OTHER_PASSWORD = "yet another passphrase 77"
ROUNDS = 3

Send = Callable[[], httpx.Response]


def race(*sends: Send) -> list[httpx.Response]:
    """Run each request in a thread of its own, released together by a barrier; no 5xx allowed."""
    start = threading.Barrier(len(sends))
    answers: list[httpx.Response | BaseException | None] = [None] * len(sends)

    def run(index: int, send: Send) -> None:
        try:
            start.wait(timeout=10)
            answers[index] = send()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            answers[index] = exc

    threads = [threading.Thread(target=run, args=(index, send)) for index, send in enumerate(sends)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for answer in answers:
        assert isinstance(answer, httpx.Response), answer
        assert answer.status_code < 500, answer.text
    return answers  # type: ignore[return-value]


def form_post(browser: TestClient, form_page: str, path: str, **fields: str) -> Send:
    """The form on ``form_page`` (its hidden fields and CSRF token), filled in, ready to submit."""
    page = browser.get(form_page)
    assert page.status_code == 200, page.text
    data = {**hidden_fields(page.text), **fields}
    return lambda: browser.post(path, data=data)


def change_form(browser: TestClient, password: str) -> Send:
    """The password-change form of ``/account``, from the current password to ``password``."""
    fields = {"current_password": PASSWORD, "password": password, "password_confirm": password}
    return form_post(browser, "/account", "/account/password", **fields)


def reset_form(browser: TestClient, token: str, password: str = NEW_PASSWORD) -> Send:
    page = f"/password/reset?{urlencode({'token': token})}"
    return form_post(browser, page, "/password/reset", password=password, password_confirm=password)


def link(ctx: Context, purpose: str, user_id: str, email: str) -> str:
    with ctx.db.begin() as db:
        return links.issue(db, purpose, user_id, email, 3600)


def look_idle(ctx: Context, user_id: str) -> None:
    """The person's sessions were last seen two minutes ago, so the next request notes it again."""
    with ctx.db.begin() as db:
        db.execute(
            update(BrowserSession)
            .where(BrowserSession.user_id == user_id)
            .values(last_seen_at=BrowserSession.last_seen_at - 120)
        )


def stored(ctx: Context, user_id: str) -> User:
    with ctx.db() as db:
        user = db.get_one(User, user_id)
        db.expunge(user)
        return user


def count_events(ctx: Context, user_id: str, event: str) -> int:
    with ctx.db() as db:
        query = select(AuditEvent.id).where(AuditEvent.user_id == user_id, AuditEvent.event == event)
        return len(list(db.scalars(query)))


def queued_to(ctx: Context, address: str) -> int:
    with ctx.db() as db:
        return len(list(db.scalars(select(OutboxMessage.id).where(OutboxMessage.recipient == address))))


def password_is(ctx: Context, user_id: str, password: str) -> bool:
    return verify_password(stored(ctx, user_id).password_hash, password)


def succeeded(answer: httpx.Response, text: str) -> bool:
    return answer.status_code == 200 and text in answer.text


def signed_out(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"] == "/login"


def redirected(answer: httpx.Response, location: str) -> bool:
    return answer.status_code == 303 and answer.headers["location"] == location


def refused_link(answer: httpx.Response) -> bool:
    return answer.status_code == 400 and "not valid" in alert_text(answer)


# --- two links -----------------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_reset_and_an_email_change_link_at_once(ctx, make_user, browsers, round_):
    """Either the reset wins and spends the change link with every other, or the address changes
    and the reset link dies with the rest: never both, never a deadlock."""
    person = make_user()
    moved = f"moved-{person.id}@example.org"
    reset = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email))
    change_link = link(ctx, email_change.PURPOSE, person.id, moved)
    mailbox = browsers()
    change_path = f"/account/email/confirm?token={change_link}"
    reset_answer, change_answer = race(reset, lambda: follow_email_change_link(mailbox, change_path))
    user = stored(ctx, person.id)
    if succeeded(reset_answer, "Password changed"):
        assert refused_link(change_answer), change_answer.text
        assert user.email == person.email and password_is(ctx, person.id, NEW_PASSWORD)
    else:
        assert refused_link(reset_answer), reset_answer.text
        assert succeeded(change_answer, f"Your email address is now {moved}"), change_answer.text
        assert user.email == moved and password_is(ctx, person.id, PASSWORD)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_reset_links_at_once(ctx, make_user, browsers, round_):
    person = make_user()
    first = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email), NEW_PASSWORD)
    second = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email), OTHER_PASSWORD)
    answers = race(first, second)
    won = [succeeded(answer, "Password changed") for answer in answers]
    assert sorted(won) == [False, True], [answer.text for answer in answers]
    assert refused_link(answers[won.index(False)])
    assert password_is(ctx, person.id, NEW_PASSWORD if won[0] else OTHER_PASSWORD)
    assert count_events(ctx, person.id, "password_reset") == 1


# --- a link and a signed-in change -----------------------------------------------------------------


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_reset_and_a_password_change_at_once(ctx, make_user, browsers, round_):
    """The reset has the last word: it either runs after the change, or ends the session the change
    came from before the change may go ahead."""
    person = make_user()
    changer = browsers()
    sign_in(changer, person.email)
    change = change_form(changer, OTHER_PASSWORD)
    reset = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email))
    look_idle(ctx, person.id)
    reset_answer, change_answer = race(reset, change)
    assert succeeded(reset_answer, "Password changed"), reset_answer.text
    assert redirected(change_answer, "/account?done=password") or signed_out(change_answer), change_answer.text
    assert password_is(ctx, person.id, NEW_PASSWORD)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_reset_while_another_browser_signs_in_at_an_app(ctx, make_user, make_client, browsers, round_):
    """The app's sign-in notes the session's last-seen time, then stores a code that refers to the
    person. The reset's lock on the person must let that code in (as the UPDATE it stands for
    would): were the code to wait for the reset, the reset would wait for the session row the
    sign-in holds."""
    person = make_user()
    client = make_client()
    elsewhere = browsers()
    tokens_for(elsewhere, client, person)  # signed in, and consented: the next visit gets a code at once
    reset = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email))
    look_idle(ctx, person.id)
    _, challenge = pkce_pair()
    params = authorize_params(client, challenge)
    reset_answer, authorize_answer = race(reset, lambda: elsewhere.get("/authorize", params=params))
    assert succeeded(reset_answer, "Password changed"), reset_answer.text
    assert authorize_answer.status_code == 303, authorize_answer.text
    assert password_is(ctx, person.id, NEW_PASSWORD)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_reset_and_a_first_password_at_once(ctx, make_user, browsers, round_):
    person = make_user(password=None)
    setter = browsers()
    with ctx.db.begin() as db:
        issued = otp.issue(ctx, db, purpose=first_password.PURPOSE, identifier=person.email, user_id=person.id)
    sign_in_by_session(ctx, setter, person.id)
    set_first = form_post(
        setter,
        "/account/password/set",
        "/account/password/set",
        code=issued.code,
        password=OTHER_PASSWORD,
        password_confirm=OTHER_PASSWORD,
    )
    reset = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email))
    look_idle(ctx, person.id)
    reset_answer, set_answer = race(reset, set_first)
    assert succeeded(reset_answer, "Password changed"), reset_answer.text
    assert redirected(set_answer, "/account?done=password_set") or signed_out(set_answer), set_answer.text
    assert password_is(ctx, person.id, NEW_PASSWORD)


def sign_in_by_session(ctx: Context, browser: TestClient, user_id: str) -> None:
    """A person signed in just now (by a code, say): a session straight from the sessions module."""
    with ctx.db.begin() as db:
        _, cookie = start_session(db, db.get_one(User, user_id), amr=["otp"], ip=None, user_agent=None, lifetime=3600)
    browser.cookies.set(SESSION_COOKIE, cookie)
    assert browser.get("/account").status_code == 200


# --- two browsers of one person ------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_password_changes_from_two_browsers(ctx, make_user, browsers, round_):
    """The first ends the other browser's session, so the second is signed out instead of
    overwriting the password it was not asked to know."""
    person = make_user()
    here, there = browsers(), browsers()
    sign_in(here, person.email)
    sign_in(there, person.email)
    first = change_form(here, NEW_PASSWORD)
    second = change_form(there, OTHER_PASSWORD)
    look_idle(ctx, person.id)
    answers = race(first, second)
    won = [redirected(answer, "/account?done=password") for answer in answers]
    assert sorted(won) == [False, True], [(answer.status_code, answer.headers.get("location")) for answer in answers]
    assert signed_out(answers[won.index(False)])
    assert password_is(ctx, person.id, NEW_PASSWORD if won[0] else OTHER_PASSWORD)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_phone_removals_from_two_browsers(ctx, make_user, browsers, round_):
    phone = random_phone()
    person = make_user(phone=phone)
    here, there = browsers(), browsers()
    sign_in(here, person.email)
    sign_in(there, person.email)
    sends = [form_post(browser, "/account", "/account/phone/remove") for browser in (here, there)]
    look_idle(ctx, person.id)
    answers = race(*sends)
    won = [redirected(answer, "/account?done=phone_removed") for answer in answers]
    assert sorted(won) == [False, True], [answer.text for answer in answers]
    assert alert_text(answers[won.index(False)]) == "There is no phone number on your account."
    assert stored(ctx, person.id).phone is None
    assert count_events(ctx, person.id, "phone_removed") == 1


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_turning_the_second_factor_off_from_two_browsers(ctx, make_user, browsers, round_):
    person = make_user()
    with ctx.db.begin() as db:
        user = db.get_one(User, person.id)
        user.mfa_method = "email"
        totp.new_recovery_codes(db, ctx.secret_key, user)
    here, there = browsers(), browsers()
    for browser in (here, there):
        sign_in_by_session(ctx, browser, person.id)
    sends = [form_post(browser, "/account/security", "/account/security/disable") for browser in (here, there)]
    before = queued_to(ctx, person.email)
    answers = race(*sends)
    won = [succeeded(answer, "Two-step sign-in is off.") for answer in answers]
    assert sorted(won) == [False, True], [answer.text for answer in answers]
    assert alert_text(answers[won.index(False)]) == "Two-step sign-in is already off."
    assert stored(ctx, person.id).mfa_method is None
    assert count_events(ctx, person.id, "second_factor_disabled") == 1
    assert queued_to(ctx, person.email) == before + 1, "one notice"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_reset_and_a_phone_removal_through_the_api_at_once(ctx, make_user, make_client, browsers, round_):
    """The reset revokes every token; a removal that waited for it is refused with its token, and
    one that went first was done before the reset, as its audit event shows."""
    phone = random_phone()
    person = make_user(phone=phone)
    client = make_client(first_party=True)
    token = tokens_for(browsers(), client, person)["access_token"]
    reset = reset_form(browsers(), link(ctx, recovery.PURPOSE, person.id, person.email))
    api = browsers()
    remove = lambda: api.delete("/api/account/phone", headers={"Authorization": f"Bearer {token}"})  # noqa: E731
    reset_answer, remove_answer = race(reset, remove)
    assert succeeded(reset_answer, "Password changed"), reset_answer.text
    if remove_answer.status_code == 401:
        assert stored(ctx, person.id).phone == phone
    else:
        assert remove_answer.status_code == 200, remove_answer.text
        with ctx.db() as db:
            order = db.scalars(
                select(AuditEvent.event)
                .where(AuditEvent.user_id == person.id, AuditEvent.event.in_(["phone_removed", "password_reset"]))
                .order_by(AuditEvent.id)
            )
            assert list(order) == ["phone_removed", "password_reset"]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_phone_removals_through_the_api(ctx, make_user, make_client, browsers, round_):
    phone = random_phone()
    person = make_user(phone=phone)
    client = make_client(first_party=True, scope="openid email phone offline_access")
    token = tokens_for(browsers(), client, person, scope="openid email phone offline_access")["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    apis = [browsers(), browsers()]
    answers = race(*[lambda api=api: api.delete("/api/account/phone", headers=headers) for api in apis])
    assert sorted(answer.status_code for answer in answers) == [200, 409], [answer.text for answer in answers]
    assert stored(ctx, person.id).phone is None
    assert count_events(ctx, person.id, "phone_removed") == 1
