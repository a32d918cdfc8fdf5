"""Setting a password does its slow work before it takes the person's row lock: checking the current
password, the history and the breach list, and hashing the new one. Held meanwhile, the lock would
queue every other action on the account (a reset, a sign-in code, a second browser) behind seconds
of argon2 and a call to Pwned Passwords. Asking for a new email address or phone number checks the
current password before the lock too.

The breach check goes to a stub of the range API that holds the first request until the test lets
it go; while it is held, the test locks the person's row itself, without waiting, from a connection
of its own. Every argon2 call is watched the same way. Under the lock, the change only makes sure
the account is still the one it checked: a password changed meanwhile refuses it, writing nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from idp.accounts import first_password, otp, password_policy, reauthentication, recovery
from idp.accounts.passwords import hash_password
from idp.app import create_app
from idp.context import Context
from idp.storage import ActionToken, AuditEvent, BrowserSession, OneTimeCode, OutboxMessage, User

from .conftest import PASSWORD, TEST_ISSUER, make_settings
from .flows import tokens_for
from .services import QuietHandler, http_server
from .test_account import post_form, random_phone, sign_in
from .test_account_api import assert_problem, bearer
from .test_account_email import new_address
from .test_account_races import (
    NEW_PASSWORD,
    OTHER_PASSWORD,
    Send,
    change_form,
    count_events,
    form_post,
    link,
    password_is,
    race,
    redirected,
    reset_form,
    sign_in_by_session,
    stored,
    succeeded,
)

CHANGED = "Your account changed while we were checking this"


@dataclass
class HeldRangeApi:
    """The range API, holding its first request until ``release`` is set."""

    url: str = ""
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def range_api() -> Iterator[HeldRangeApi]:
    api = HeldRangeApi()
    first = threading.Lock()

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            if first.acquire(blocking=False):
                api.arrived.set()
                api.release.wait(timeout=30)
            self.respond(200, ("0" * 35 + ":0").encode(), "text/plain")

    with http_server(Handler) as url:
        api.url = url
        yield api
        api.release.set()


@pytest.fixture
def checking(
    base_environ: dict[str, str], settings: Any, range_api: HeldRangeApi
) -> Iterator[Callable[[], TestClient]]:
    """Browsers of an app that checks new passwords against ``range_api`` (on the suite's database)."""
    app = create_app(make_settings(base_environ, IDP_PWNED_PASSWORDS="on", IDP_PWNED_PASSWORDS_API=range_api.url))
    yield lambda: TestClient(app, base_url=TEST_ISSUER, follow_redirects=False)
    app.state.ctx.close()


def person_lockable(ctx: Context, user_id: str) -> bool:
    """Whether another transaction can take the person's row lock at once, without waiting: on
    PostgreSQL the row's, on SQLite the database's one write lock (which is what locks a row there)."""
    if ctx.engine.dialect.name == "sqlite":
        connection = sqlite3.connect(str(ctx.engine.url.database), timeout=0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        finally:
            connection.close()
        return True
    with ctx.engine.connect() as connection:
        try:
            connection.execute(select(User.id).where(User.id == user_id).with_for_update(nowait=True))
        except OperationalError:
            return False
        finally:
            connection.rollback()
    return True


def while_held(range_api: HeldRangeApi, send: Send, check: Callable[[], None]) -> httpx.Response:
    """Send in a thread of its own; run ``check`` while the breach check is held, then let it go."""
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(send()))
    thread.start()
    try:
        assert range_api.arrived.wait(timeout=30), "the breach check never came"
        check()
    finally:
        range_api.release.set()
        thread.join(timeout=60)
    (answer,) = answers
    return answer


@dataclass
class Argon2Watch:
    """Each argon2 call of setting a password: whether the person's row could be locked by another
    at that moment."""

    person_id: str = ""
    lockable: list[bool] = field(default_factory=list)
    meanwhile: Callable[[], None] | None = None
    """Run at the first call, as another request would."""


@pytest.fixture
def argon2(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Argon2Watch:
    watch = Argon2Watch()

    def watched(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            watch.lockable.append(person_lockable(ctx, watch.person_id))
            if watch.meanwhile is not None:
                watch.meanwhile, meanwhile = None, watch.meanwhile
                meanwhile()
            return real(*args)

        return call

    for module, name in (
        (password_policy, "hash_password"),
        (password_policy, "verify_password"),
        (reauthentication, "verify_password"),
    ):
        monkeypatch.setattr(module, name, watched(getattr(module, name)))
    return watch


Flow = tuple[str, Send, Callable[[httpx.Response], bool]]
"""The person, their request, and whether its answer says it worked."""


def changing(ctx: Context, make_user: Any, make_client: Any, browsers: Any, checking: Any) -> Flow:
    person = make_user()
    browser = checking()
    sign_in(browser, person.email)
    send = change_form(browser, NEW_PASSWORD)
    return person.id, send, lambda answer: redirected(answer, "/account?done=password")


def changing_by_api(ctx: Context, make_user: Any, make_client: Any, browsers: Any, checking: Any) -> Flow:
    person = make_user()
    token = tokens_for(browsers(), make_client(first_party=True), person)["access_token"]
    api = checking()
    body = {"current_password": PASSWORD, "password": NEW_PASSWORD}
    return person.id, lambda: api.post("/api/account/password", headers=bearer(token), json=body), _no_content


def setting_a_first(ctx: Context, make_user: Any, make_client: Any, browsers: Any, checking: Any) -> Flow:
    person = make_user(password=None)
    with ctx.db.begin() as db:
        issued = otp.issue(ctx, db, purpose=first_password.PURPOSE, identifier=person.email, user_id=person.id)
    browser = checking()
    sign_in_by_session(ctx, browser, person.id)
    send = form_post(
        browser,
        "/account/password/set",
        "/account/password/set",
        code=issued.code,
        password=NEW_PASSWORD,
        password_confirm=NEW_PASSWORD,
    )
    return person.id, send, lambda answer: redirected(answer, "/account?done=password_set")


def resetting(ctx: Context, make_user: Any, make_client: Any, browsers: Any, checking: Any) -> Flow:
    person = make_user()
    send = reset_form(checking(), link(ctx, recovery.PURPOSE, person.id, person.email))
    return person.id, send, lambda answer: succeeded(answer, "Password changed")


def _no_content(answer: httpx.Response) -> bool:
    return answer.status_code == 204


@pytest.mark.parametrize("flow", [changing, changing_by_api, setting_a_first, resetting])
def test_argon2_and_the_breach_check_run_without_the_persons_lock(
    flow, ctx, make_user, make_client, browsers, checking, range_api, argon2
):
    person_id, send, worked = flow(ctx, make_user, make_client, browsers, checking)
    argon2.person_id = person_id
    during_breach_check: list[bool] = []
    answer = while_held(range_api, send, lambda: during_breach_check.append(person_lockable(ctx, person_id)))
    assert worked(answer), answer.text
    assert during_breach_check == [True], "the breach check ran under the person's lock"
    assert argon2.lockable and all(argon2.lockable), argon2.lockable
    assert password_is(ctx, person_id, NEW_PASSWORD)


Ask = Callable[[TestClient, str], httpx.Response]
"""Asking, with the current password, for a change the person's row lock guards."""


def ask_email_on_the_page(browser: TestClient, token: str) -> httpx.Response:
    return post_form(
        browser, "/account/email", form_page="/account/email", email=new_address(), current_password=PASSWORD
    )


def ask_email_by_api(browser: TestClient, token: str) -> httpx.Response:
    body = {"email": new_address(), "current_password": PASSWORD}
    return browser.post("/api/account/email", headers=bearer(token), json=body)


def ask_phone_on_the_page(browser: TestClient, token: str) -> httpx.Response:
    return post_form(browser, "/account/phone", phone=random_phone(), current_password=PASSWORD)


def ask_phone_by_api(browser: TestClient, token: str) -> httpx.Response:
    body = {"phone": random_phone(), "current_password": PASSWORD}
    return browser.post("/api/account/phone", headers=bearer(token), json=body)


ASKS = [ask_email_on_the_page, ask_email_by_api, ask_phone_on_the_page, ask_phone_by_api]


def asking(ctx: Context, make_user: Any, make_client: Any, browsers: Any) -> tuple[str, TestClient, str]:
    """A person signed in in a browser, and an access token of theirs for the account API."""
    person = make_user()
    browser = browsers()
    token = tokens_for(browser, make_client(first_party=True), person)["access_token"]
    return person.id, browser, token


@pytest.mark.parametrize("ask", ASKS)
def test_the_current_password_is_checked_without_the_persons_lock(ask, ctx, make_user, make_client, browsers, argon2):
    argon2.person_id, browser, token = asking(ctx, make_user, make_client, browsers)
    answer = ask(browser, token)
    assert answer.status_code in (202, 303), answer.text
    assert argon2.lockable == [True]


@pytest.mark.parametrize("ask", ASKS)
def test_a_password_changed_while_the_current_one_is_checked_refuses_the_change(
    ask, ctx, make_user, make_client, browsers, argon2
):
    """Checked against a password that is no longer the person's: nothing is sent, try again."""
    person_id, browser, token = asking(ctx, make_user, make_client, browsers)
    argon2.person_id = person_id

    other_hash = hash_password(OTHER_PASSWORD)

    def change_it() -> None:
        with ctx.db.begin() as db:
            db.execute(update(User).where(User.id == person_id).values(password_hash=other_hash))

    argon2.meanwhile = change_it
    answer = ask(browser, token)
    assert answer.status_code == 409, answer.text
    if answer.headers["content-type"].startswith("application/problem+json"):
        assert_problem(answer, 409, "account-changed")
    else:
        assert CHANGED in answer.text
    with ctx.db() as db:
        codes = db.scalars(select(OneTimeCode.id).where(OneTimeCode.user_id == person_id))
        links = db.scalars(select(ActionToken.token_hash).where(ActionToken.user_id == person_id))
        assert list(codes) == [] and list(links) == []
    assert password_is(ctx, person_id, OTHER_PASSWORD)


def other_tab(checking: Callable[[], TestClient], browser: TestClient) -> TestClient:
    """Another tab of ``browser``: the same cookies, the same session."""
    tab = checking()
    for name, value in browser.cookies.items():
        tab.cookies.set(name, value)
    return tab


def password_changes(ctx: Context, user_id: str) -> list[tuple[str, Any]]:
    with ctx.db() as db:
        query = select(AuditEvent.outcome, AuditEvent.detail).where(
            AuditEvent.user_id == user_id, AuditEvent.event == "password_changed"
        )
        return [(outcome, detail) for outcome, detail in db.execute(query)]


def notices(ctx: Context, address: str) -> int:
    with ctx.db() as db:
        return len(list(db.scalars(select(OutboxMessage.id).where(OutboxMessage.recipient == address))))


def test_a_password_changed_meanwhile_refuses_the_change_and_nothing_is_written(ctx, make_user, checking, range_api):
    """Another tab of the same session changed the password while this change was checked: the
    history it was checked against is no longer the person's. Trying again works."""
    person = make_user()
    browser = checking()
    sign_in(browser, person.email)
    fields = {"current_password": PASSWORD, "password_confirm": NEW_PASSWORD, "password": NEW_PASSWORD}
    first = form_post(browser, "/account", "/account/password", **fields)
    tab = other_tab(checking, browser)
    other = {"current_password": PASSWORD, "password_confirm": OTHER_PASSWORD, "password": OTHER_PASSWORD}
    second = form_post(tab, "/account", "/account/password", **other)
    mail = notices(ctx, person.email)
    meanwhile: list[httpx.Response] = []

    answer = while_held(range_api, first, lambda: meanwhile.append(second()))

    assert redirected(meanwhile[0], "/account?done=password"), meanwhile[0].text
    assert answer.status_code == 409, answer.text
    assert CHANGED in answer.text
    assert password_is(ctx, person.id, OTHER_PASSWORD)
    assert password_changes(ctx, person.id) == [("success", {"sessions_ended": 0})]
    assert notices(ctx, person.email) == mail + 1, "one notice, of the change that was made"
    retry = {"current_password": OTHER_PASSWORD, "password_confirm": NEW_PASSWORD, "password": NEW_PASSWORD}
    assert redirected(form_post(browser, "/account", "/account/password", **retry)(), "/account?done=password")
    assert password_is(ctx, person.id, NEW_PASSWORD)


def test_the_api_answers_a_password_changed_meanwhile_with_a_409(
    ctx, make_user, make_client, browsers, checking, range_api
):
    person = make_user()
    token = tokens_for(browsers(), make_client(first_party=True), person)["access_token"]
    api, other_api = checking(), checking()
    first = {"current_password": PASSWORD, "password": NEW_PASSWORD}
    second = {"current_password": PASSWORD, "password": OTHER_PASSWORD}
    meanwhile: list[httpx.Response] = []

    answer = while_held(
        range_api,
        lambda: api.post("/api/account/password", headers=bearer(token), json=first),
        lambda: meanwhile.append(other_api.post("/api/account/password", headers=bearer(token), json=second)),
    )

    assert meanwhile[0].status_code == 204, meanwhile[0].text
    assert_problem(answer, 409, "account-changed")
    assert password_is(ctx, person.id, OTHER_PASSWORD)


def test_a_reset_still_wins_over_a_password_changed_meanwhile(ctx, make_user, checking, range_api):
    """The owner's reset must not be refused because whoever holds a session changes the password
    at the same time: it checks the new password again, and ends that session."""
    person = make_user()
    intruder = checking()
    sign_in(intruder, person.email)
    change = change_form(intruder, OTHER_PASSWORD)
    reset = reset_form(checking(), link(ctx, recovery.PURPOSE, person.id, person.email))
    meanwhile: list[httpx.Response] = []

    answer = while_held(range_api, reset, lambda: meanwhile.append(change()))

    assert redirected(meanwhile[0], "/account?done=password"), meanwhile[0].text
    assert succeeded(answer, "Password changed"), answer.text
    assert password_is(ctx, person.id, NEW_PASSWORD)
    assert intruder.get("/account").headers["location"] == "/login"


ROUNDS = 3


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_wrong_current_passwords_at_the_threshold_lock_the_account_once(ctx, make_user, browsers, round_):
    """Counted without the lock, each wrong password is still counted once, by one atomic
    increment: one of the two locks the account (and its owner hears of it once), the other finds
    it locked."""
    person = make_user()
    here, there = browsers(), browsers()
    sign_in(here, person.email)
    sign_in(there, person.email)
    attempts = ctx.settings.lockout_attempts
    with ctx.db.begin() as db:
        db.execute(update(User).where(User.id == person.id).values(failed_sign_ins=attempts - 1))
    mail = notices(ctx, person.email)
    wrong = {"current_password": "not the password", "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}

    answers = race(*[form_post(browser, "/account", "/account/password", **wrong) for browser in (here, there)])

    assert [answer.status_code for answer in answers] == [400, 400]
    said = sorted("not right" if "not right" in answer.text else "locked" for answer in answers)
    assert said == ["locked", "not right"], [answer.text for answer in answers]
    user = stored(ctx, person.id)
    assert user.locked_until is not None and user.failed_sign_ins == 0
    assert notices(ctx, person.email) == mail + 1, "one email says the account is locked"
    reasons = sorted(detail["reason"] for _, detail in password_changes(ctx, person.id))
    assert reasons == ["account_locked", "wrong_current_password"]
    assert count_events(ctx, person.id, "password_changed") == 2
    assert password_is(ctx, person.id, PASSWORD)


def signed_in_long_ago(ctx: Context, make_user: Any, make_client: Any, browsers: Any) -> tuple[str, TestClient]:
    """A person whose session signed in too long ago for it to stand in for the password."""
    person_id, browser, _ = asking(ctx, make_user, make_client, browsers)
    with ctx.db.begin() as db:
        db.execute(update(BrowserSession).where(BrowserSession.user_id == person_id).values(auth_time=1))
    return person_id, browser


@pytest.mark.parametrize(
    ("path", "fields", "done"),
    [
        ("/account/security/enable", {"method": "totp"}, "account_security_enrol"),
        ("/account/security/disable", {}, "already off"),
    ],
)
def test_two_step_settings_check_the_current_password_without_the_persons_lock(
    path, fields, done, ctx, make_user, make_client, browsers, argon2
):
    """Turning two-step sign-in on or off asks for the password of a session that signed in long
    ago; the check runs before the person's row is locked, and its answer is the usual one."""
    argon2.person_id, browser = signed_in_long_ago(ctx, make_user, make_client, browsers)
    answer = post_form(browser, path, form_page="/account/security", current_password=PASSWORD, **fields)
    assert argon2.lockable == [True]
    assert "Your current password is not right." not in answer.text
    if done == "account_security_enrol":
        assert answer.status_code == 200 and 'id="totp-key"' in answer.text, answer.text
    else:
        assert answer.status_code == 400 and "Two-step sign-in is already off." in answer.text, answer.text


def test_a_wrong_password_for_two_step_settings_is_refused_and_counted(ctx, make_user, make_client, browsers):
    person_id, browser = signed_in_long_ago(ctx, make_user, make_client, browsers)
    answer = post_form(
        browser, "/account/security/enable", form_page="/account/security", current_password="wrong", method="totp"
    )
    assert answer.status_code == 400 and "Your current password is not right." in answer.text
    assert stored(ctx, person_id).failed_sign_ins == 1
