"""A first password for an account that signs in with codes: on ``/account/password/set`` and by
``POST /api/account/password/set``, only with a fresh code sent to the account's email."""

from __future__ import annotations

import re
import time

import pytest
from starlette.testclient import TestClient

from idp.messaging.worker import deliver_due
from idp.storage import User

from .conftest import PASSWORD, TEST_ISSUER
from .flows import EMAIL_CODE, ask_for_code, enter_code, tokens_for, unsent_to
from .test_account import alert_text, events, notice_text, post_form, sign_in, signed_in, stored_user
from .test_account_api import Documented, assert_problem, bearer

FIRST_PASSWORD = "my very first passphrase 7"
CODE = re.compile(r"Your code to set a password is (\d{6})\b")
PASSWORD_CHANGED = re.compile(r"the password of your account was changed")


def set_password_code(ctx, caplog: pytest.LogCaptureFixture, email: str) -> str:  # type: ignore[no-untyped-def]
    """The code in the newest "set a password" email to ``email``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        deliver_due(ctx)
        if unsent_to(ctx, email):
            time.sleep(0.05)
            continue
        printed = [r.getMessage() for r in caplog.records if r.name == "idp.messages"]
        codes = [CODE.search(text) for text in printed if text.startswith(f"email to {email}\n")]
        found = [match.group(1) for match in codes if match]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no code to set a password went to {email}")


def emailed(ctx, caplog: pytest.LogCaptureFixture, email: str, pattern: re.Pattern[str]) -> re.Match[str]:  # type: ignore[no-untyped-def]
    """The first match of ``pattern`` in the emails to ``email``, newest first, waiting for the worker."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        deliver_due(ctx)
        if unsent_to(ctx, email):
            time.sleep(0.05)
            continue
        printed = [r.getMessage() for r in caplog.records if r.name == "idp.messages"]
        found = [pattern.search(text) for text in reversed(printed) if text.startswith(f"email to {email}\n")]
        if any(found):
            return next(match for match in found if match)
        time.sleep(0.05)
    raise AssertionError(f"no email to {email} matches {pattern.pattern}")


def signed_in_by_code(browser: TestClient, ctx, caplog: pytest.LogCaptureFixture, email: str) -> None:  # type: ignore[no-untyped-def]
    """Another session of the person's, as they sign in without a password."""
    assert ask_for_code(browser, email).status_code == 303
    assert enter_code(browser, emailed(ctx, caplog, email, EMAIL_CODE).group(1)).status_code == 303
    assert signed_in(browser)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def ask_code(browser: TestClient, form_page: str = "/account"):  # type: ignore[no-untyped-def]
    return post_form(browser, "/account/password/set/code", form_page=form_page)


def submit(browser: TestClient, code: str, password: str = FIRST_PASSWORD, confirm: str | None = None):  # type: ignore[no-untyped-def]
    return post_form(
        browser,
        "/account/password/set",
        form_page="/account/password/set",
        code=code,
        password=password,
        password_confirm=confirm or password,
    )


@pytest.fixture
def person(make_user):  # type: ignore[no-untyped-def]
    return make_user()


@pytest.fixture
def me(browsers, ctx, person) -> TestClient:  # type: ignore[no-untyped-def]
    """A browser signed in as ``person``, whose account then signs in with codes only."""
    opened = browsers()
    sign_in(opened, person.email)
    with ctx.db.begin() as db:
        db.get(User, person.id).password_hash = None
    return opened


# --- the hosted page -----------------------------------------------------------------------------


def test_a_first_password_is_set_with_the_emailed_code(me, browsers, ctx, person, mail_log):
    page = me.get("/account")
    assert 'action="/account/password/set/code"' in page.text
    assert 'name="current_password"' not in page.text
    sent = ask_code(me)
    assert sent.status_code == 200
    assert notice_text(sent) == f"We sent a code to {person.email}."
    for name in ("code", "password", "password_confirm"):
        assert re.search(rf'<input[^>]*name="{name}"', sent.text), name
    code = set_password_code(ctx, mail_log, person.email)
    response = submit(me, code)
    assert response.status_code == 303
    assert response.headers["location"] == "/account?done=password_set"
    assert (
        notice_text(me.get("/account?done=password_set"))
        == "Your password is set: you can sign in with it from now on."
    )
    sign_in(browsers(), person.email, FIRST_PASSWORD)
    assert events(ctx, person.id, "code_sent")[-1].detail == {"channel": "email", "purpose": "set_password"}
    (done,) = events(ctx, person.id, "password_set")
    assert done.outcome == "success"
    assert me.get("/account/password/set").headers["location"] == "/account", "nothing left to set"


def test_a_first_password_ends_the_other_sessions_and_tells_the_owner(me, browsers, ctx, person, mail_log):
    """As for a changed password: whoever else was signed in is out, and the mailbox hears of it."""
    there = browsers()
    signed_in_by_code(there, ctx, mail_log, person.email)
    ask_code(me)
    assert submit(me, set_password_code(ctx, mail_log, person.email)).status_code == 303
    assert signed_in(me) and not signed_in(there)
    assert emailed(ctx, mail_log, person.email, PASSWORD_CHANGED)
    assert events(ctx, person.id, "password_set")[-1].detail == {"sessions_ended": 1}


def test_a_wrong_code_sets_nothing_and_three_spend_the_code(me, ctx, person, mail_log):
    ask_code(me)
    code = set_password_code(ctx, mail_log, person.email)
    for _ in range(3):
        response = submit(me, other_code(code))
        assert response.status_code == 400
        assert "not right" in alert_text(response)
    response = submit(me, code)
    assert response.status_code == 400, "the code is spent"
    assert stored_user(ctx, person.id).password_hash is None
    failures = events(ctx, person.id, "password_set")
    assert len(failures) == 4 and failures[0].detail == {"reason": "wrong_code"}


def test_a_password_the_policy_refuses_leaves_the_code_usable(me, ctx, person, mail_log):
    ask_code(me)
    code = set_password_code(ctx, mail_log, person.email)
    refused = submit(me, code, "password123")
    assert refused.status_code == 400
    assert "too common" in alert_text(refused)
    differ = submit(me, code, FIRST_PASSWORD, FIRST_PASSWORD + "!")
    assert differ.status_code == 400
    assert "not the same" in alert_text(differ)
    assert stored_user(ctx, person.id).password_hash is None
    assert submit(me, code).status_code == 303


def test_an_account_with_a_password_changes_it_instead(browsers, make_user):
    user = make_user()
    browser = browsers()
    sign_in(browser, user.email)
    assert 'action="/account/password/set/code"' not in browser.get("/account").text
    response = ask_code(browser)
    assert response.status_code == 400
    assert "already has a password" in alert_text(response)
    assert browser.get("/account/password/set").headers["location"] == "/account"


def test_the_code_needs_a_verified_email_address(me, ctx, person):
    with ctx.db.begin() as db:
        db.get(User, person.id).email_verified = False
    response = ask_code(me)
    assert response.status_code == 400
    assert "verify an email address first" in alert_text(response)
    assert events(ctx, person.id, "code_sent") == []


def test_the_form_without_a_code_goes_back_to_the_account(me):
    assert me.get("/account/password/set").headers["location"] == "/account"


def test_too_many_codes_show_a_wait(me, ctx, person, mail_log):
    assert ask_code(me).status_code == 200
    for _ in range(2):
        assert ask_code(me, "/account/password/set").status_code == 200
    response = ask_code(me, "/account/password/set")
    assert response.status_code == 429
    assert re.search(r"in \d+ seconds", alert_text(response))
    assert re.search(r"<button[^>]*disabled[^>]*>Send a new code", response.text)


def test_posts_without_csrf_token_are_refused(me, ctx, person, mail_log):
    refused = me.post("/account/password/set/code", data={})
    assert refused.status_code == 400
    assert "expired" in alert_text(refused)
    ask_code(me)
    code = set_password_code(ctx, mail_log, person.email)
    response = me.post(
        "/account/password/set", data={"code": code, "password": FIRST_PASSWORD, "password_confirm": FIRST_PASSWORD}
    )
    assert response.status_code == 400
    assert "expired" in alert_text(response)
    assert stored_user(ctx, person.id).password_hash is None


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/account/password/set"), ("POST", "/account/password/set"), ("POST", "/account/password/set/code")],
)
def test_without_a_session_it_goes_to_login(http, method, path):
    response = http.request(method, path, data={"csrf_token": "x"} if method == "POST" else None)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


# --- the API -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def documented(app) -> Documented:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url=TEST_ISSUER) as http:
        return Documented(http.get("/api/account/openapi.json").json())


@pytest.fixture
def token(browsers, make_client, ctx, person) -> str:  # type: ignore[no-untyped-def]
    access = tokens_for(browsers(), make_client(first_party=True), person)["access_token"]
    with ctx.db.begin() as db:
        db.get(User, person.id).password_hash = None
    return access


def api_set(http: TestClient, token: str, code: str, password: str = FIRST_PASSWORD):  # type: ignore[no-untyped-def]
    return http.post("/api/account/password/set", headers=bearer(token), json={"code": code, "password": password})


def test_the_api_sets_a_first_password_with_the_emailed_code(http, browsers, ctx, token, person, mail_log, documented):
    sent = http.post("/api/account/password/set/code", headers=bearer(token))
    assert sent.status_code == 202, sent.text
    assert sent.json() == {"email": person.email, "expires_in": ctx.settings.otp_ttl}
    documented.check(sent, "/api/account/password/set/code", "post")
    code = set_password_code(ctx, mail_log, person.email)
    wrong = api_set(http, token, other_code(code))
    assert_problem(wrong, 422, "wrong-code")
    documented.check(wrong, "/api/account/password/set", "post")
    rejected = api_set(http, token, code, "password123")
    assert "too common" in assert_problem(rejected, 422, "password-rejected")["detail"]
    documented.check(rejected, "/api/account/password/set", "post")
    response = api_set(http, token, code)
    assert response.status_code == 204, response.text
    documented.check(response, "/api/account/password/set", "post")
    sign_in(browsers(), person.email, FIRST_PASSWORD)
    assert [e.outcome for e in events(ctx, person.id, "password_set")] == ["failure", "success"]


def test_the_api_ends_every_session_but_the_tokens_and_tells_the_owner(http, browsers, ctx, token, person, mail_log):
    there = browsers()
    signed_in_by_code(there, ctx, mail_log, person.email)
    assert http.post("/api/account/password/set/code", headers=bearer(token)).status_code == 202
    assert api_set(http, token, set_password_code(ctx, mail_log, person.email)).status_code == 204
    assert not signed_in(there)
    assert http.get("/api/account", headers=bearer(token)).status_code == 200, "the token's own session stays"
    assert emailed(ctx, mail_log, person.email, PASSWORD_CHANGED)


def test_the_api_refuses_an_account_that_has_a_password(http, browsers, make_client, make_user, documented):
    user = make_user()
    access = tokens_for(browsers(), make_client(first_party=True), user)["access_token"]
    for path, body in (
        ("/api/account/password/set/code", None),
        ("/api/account/password/set", {"code": "123456", "password": FIRST_PASSWORD}),
    ):
        response = http.post(path, headers=bearer(access), json=body)
        assert_problem(response, 409, "password-already-set")
        documented.check(response, path, "post")
    sign_in(browsers(), user.email, PASSWORD)


def test_the_api_needs_a_verified_email_address(http, ctx, token, person, documented):
    with ctx.db.begin() as db:
        db.get(User, person.id).email_verified = False
    response = http.post("/api/account/password/set/code", headers=bearer(token))
    assert_problem(response, 409, "no-verified-email")
    documented.check(response, "/api/account/password/set/code", "post")


def test_the_api_limits_codes(http, token, documented):
    for _ in range(3):
        assert http.post("/api/account/password/set/code", headers=bearer(token)).status_code == 202
    response = http.post("/api/account/password/set/code", headers=bearer(token))
    problem = assert_problem(response, 429, "too-many-codes")
    assert int(response.headers["retry-after"]) == problem["retry_after"] > 0
    documented.check(response, "/api/account/password/set/code", "post")
