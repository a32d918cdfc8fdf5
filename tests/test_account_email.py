"""Changing the email address: on ``/account/email`` and by ``POST /api/account/email``, proven by a
link sent to the new address, with a notice to the old one."""

from __future__ import annotations

import os
import re
import time

import pytest
from sqlalchemy import delete, update
from starlette.testclient import TestClient

from idp.app import create_app
from idp.messaging.worker import deliver_due
from idp.storage import AuditEvent, BrowserSession, User

from .conftest import PASSWORD, TEST_ISSUER, make_settings
from .flows import EMAIL_CODE, ask_for_code, enter_code, follow_email_change_link, hidden_fields, query_of, tokens_for
from .test_account import (
    alert_text,
    events,
    notice_text,
    post_form,
    sign_in,
    signed_in,
    stored_user,
)
from .test_account_api import Documented, assert_problem, bearer
from .test_rate_limits import new_address as new_peer_address

LINK = re.compile(r"(http://testserver/account/email/confirm\?token=\S+)")
RESET_LINK = re.compile(r"http://testserver(/password/reset\?token=\S+)")


def new_address() -> str:
    return f"moved-{os.urandom(4).hex()}@example.org"


def mail_to(ctx, caplog: pytest.LogCaptureFixture, address: str, count: int = 1) -> list[str]:  # type: ignore[no-untyped-def]
    """The emails printed for ``address``, oldest first, once there are ``count`` of them (the app's
    own worker may have sent them already)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        deliver_due(ctx)
        printed = [r.getMessage() for r in caplog.records if r.name == "idp.messages"]
        mine = [text for text in printed if text.startswith(f"email to {address}\n")]
        if len(mine) >= count:
            return mine
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} emails to {address}")


def link_in(message: str) -> str:
    found = LINK.search(message)
    assert found, message
    return found.group(1).removeprefix(TEST_ISSUER)


def age_sessions(ctx, user_id: str, seconds: int = 10 * 60) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.begin() as db:
        db.execute(
            update(BrowserSession)
            .where(BrowserSession.user_id == user_id)
            .values(auth_time=BrowserSession.auth_time - seconds)
        )


def drop_password(ctx, user_id: str) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.begin() as db:
        db.get(User, user_id).password_hash = None


def ask(browser: TestClient, email: str, password: str | None = PASSWORD):  # type: ignore[no-untyped-def]
    fields = {"email": email} | ({"current_password": password} if password is not None else {})
    return post_form(browser, "/account/email", form_page="/account/email", **fields)


@pytest.fixture
def person(make_user):  # type: ignore[no-untyped-def]
    return make_user(name="Ada Email")


@pytest.fixture
def me(browsers, person) -> TestClient:  # type: ignore[no-untyped-def]
    opened = browsers()
    sign_in(opened, person.email)
    return opened


# --- the hosted page -----------------------------------------------------------------------------


def test_the_address_changes_only_when_the_link_is_followed(me, browsers, ctx, person, mail_log):
    form = me.get("/account/email")
    assert form.status_code == 200
    for name in ("email", "current_password", "csrf_token"):
        assert re.search(rf'<input[^>]*name="{name}"', form.text), name
    new = new_address()
    response = ask(me, new.upper())
    assert response.status_code == 303
    assert response.headers["location"] == "/account?done=email"
    page = me.get("/account?done=email")
    assert "Your email address changes when you open it" in notice_text(page)
    assert f"We sent a link to {new}" in page.text
    assert stored_user(ctx, person.id).email == person.email, "not before the link"

    (message,) = mail_to(ctx, mail_log, new)
    elsewhere = browsers()
    assert elsewhere.head(link_in(message)).status_code == 200, "a mail scanner's HEAD spends nothing"
    followed = follow_email_change_link(elsewhere, link_in(message))
    assert followed.status_code == 200, followed.text
    assert f"Your email address is now {new}" in notice_text(followed)
    user = stored_user(ctx, person.id)
    assert (user.email, user.email_verified) == (new, True)

    notices = mail_to(ctx, mail_log, person.email, count=2)
    assert any("Someone asked to change your email address" in text for text in notices), "told when asked"
    (notice,) = [text for text in notices if "Your email address was changed" in text]
    assert "m***@example.org" in notice and new not in notice
    requested, changed = events(ctx, person.id, "email_change_requested"), events(ctx, person.id, "email_changed")
    assert [e.outcome for e in requested] == ["success"] and [e.outcome for e in changed] == ["success"]
    assert set(requested[0].detail) == {"address", "recipient"}
    assert changed[0].detail == {"from": f"{person.email[0]}***@example.com", "to": "m***@example.org"}
    assert new not in str(requested[0].detail) + str(changed[0].detail)

    again = follow_email_change_link(elsewhere, link_in(message))
    assert again.status_code == 400
    assert "not valid" in alert_text(again)
    assert f"We sent a link to {new}" not in me.get("/account").text
    sign_in(browsers(), new)


def test_opening_the_link_changes_nothing_until_its_button_is_pressed(me, browsers, ctx, person, mail_log):
    """A mail scanner fetches the links of the mail it reads: a GET only shows a page whose button
    posts the link's token back with the page's CSRF token."""
    new = new_address()
    ask(me, new)
    path = link_in(mail_to(ctx, mail_log, new)[0])
    mailbox = browsers()
    for _ in range(2):
        page = mailbox.get(path)
        assert page.status_code == 200, page.text
        assert page.headers["cache-control"] == "no-store"
        assert re.search(r'<form method="post" action="/account/email/confirm">', page.text)
        assert set(hidden_fields(page.text)) == {"csrf_token", "token"}
        assert hidden_fields(page.text)["token"] == query_of(path)["token"]
        assert new in page.text
    assert stored_user(ctx, person.id).email == person.email
    assert events(ctx, person.id, "email_changed") == []

    confirmed = mailbox.post("/account/email/confirm", data=hidden_fields(page.text))
    assert confirmed.status_code == 200, confirmed.text
    assert f"Your email address is now {new}" in notice_text(confirmed)
    assert stored_user(ctx, person.id).email == new


@pytest.mark.parametrize("csrf_token", [None, "", "forged", "another browser's"])
def test_confirming_without_a_valid_csrf_token_changes_nothing(me, browsers, ctx, person, mail_log, csrf_token):
    new = new_address()
    ask(me, new)
    path = link_in(mail_to(ctx, mail_log, new)[0])
    mailbox = browsers()
    fields = hidden_fields(mailbox.get(path).text)
    if csrf_token is None:
        del fields["csrf_token"]
    elif csrf_token == "another browser's":
        fields["csrf_token"] = hidden_fields(browsers().get(path).text)["csrf_token"]
    else:
        fields["csrf_token"] = csrf_token
    refused = mailbox.post("/account/email/confirm", data=fields)
    assert refused.status_code == 400, refused.text
    assert "expired" in alert_text(refused)
    assert stored_user(ctx, person.id).email == person.email
    assert events(ctx, person.id, "email_changed") == []
    # The link still works from its own page.
    assert follow_email_change_link(mailbox, path).status_code == 200
    assert stored_user(ctx, person.id).email == new


def test_a_confirmation_without_the_links_token_changes_nothing(me, browsers, ctx, person, mail_log):
    new = new_address()
    ask(me, new)
    path = link_in(mail_to(ctx, mail_log, new)[0])
    mailbox = browsers()
    fields = hidden_fields(mailbox.get(path).text)
    for token in ("", "x" * 500, fields["token"][:-2]):
        refused = mailbox.post("/account/email/confirm", data={**fields, "token": token})
        assert refused.status_code == 400
        assert "not valid" in alert_text(refused)
    assert stored_user(ctx, person.id).email == person.email


def test_a_wrong_password_changes_nothing_and_counts_toward_the_lockout(me, ctx, person, mail_log):
    new = new_address()
    response = ask(me, new, "not the password")
    assert response.status_code == 400
    assert alert_text(response) == "Your current password is not right."
    assert f'value="{new}"' in response.text, "the address typed stays in the field"
    assert stored_user(ctx, person.id).failed_sign_ins == 1
    assert events(ctx, person.id, "email_change_requested")[-1].detail == {"reason": "wrong_password"}
    deliver_due(ctx)
    assert not [r for r in mail_log.records if r.getMessage().startswith(f"email to {new}\n")]


@pytest.mark.parametrize("typed", ["not an address", "", "x" * 400 + "@example.org"])
def test_something_that_is_not_an_address_is_refused(me, typed):
    response = ask(me, typed)
    assert response.status_code == 400
    assert alert_text(response) == "Enter an email address, like name@example.com."


def test_a_nul_in_the_form_is_refused_before_anything_is_asked(me, ctx, person):
    response = ask(me, "a\x00b@example.org")
    assert response.status_code == 400
    assert "NUL" in alert_text(response)
    assert events(ctx, person.id, "email_change_requested") == []


def test_the_current_address_is_refused(me, person):
    response = ask(me, person.email)
    assert response.status_code == 400
    assert alert_text(response) == "That is already your email address."


def test_a_taken_address_gets_the_same_answer_and_its_owner_a_notice(me, make_user, ctx, person, mail_log):
    holder = make_user()
    free = new_address()
    taken_answer, free_answer = ask(me, holder.email), ask(me, free)
    assert (taken_answer.status_code, taken_answer.headers["location"]) == (
        free_answer.status_code,
        free_answer.headers["location"],
    )
    ask(me, holder.email)
    page = me.get("/account")
    assert f"We sent a link to {holder.email}" in page.text, "the page shows it waiting as for a free address"
    notices = mail_to(ctx, mail_log, holder.email, count=2)
    assert all("Someone tried to use your email address" in text and not LINK.search(text) for text in notices)
    assert stored_user(ctx, holder.id).email == holder.email
    assert stored_user(ctx, person.id).email == person.email
    outcomes = [(e.outcome, e.detail.get("reason")) for e in events(ctx, person.id, "email_change_requested")]
    assert outcomes == [("failure", "address_taken"), ("success", None), ("failure", "address_taken")]


def test_an_address_taken_after_the_link_was_sent_fails_cleanly(me, browsers, make_user, ctx, person, mail_log):
    new = new_address()
    ask(me, new)
    (message,) = mail_to(ctx, mail_log, new)
    quicker = make_user(email=new)
    response = follow_email_change_link(browsers(), link_in(message))
    assert response.status_code == 409
    assert "belongs to another account" in alert_text(response)
    assert stored_user(ctx, person.id).email == person.email
    assert stored_user(ctx, quicker.id).email == new
    assert events(ctx, person.id, "email_changed")[-1].detail == {"reason": "address_taken"}
    assert follow_email_change_link(browsers(), link_in(message)).status_code == 400, "the link is spent"


def test_a_link_followed_in_another_accounts_browser_changes_only_the_account_that_asked(
    me, browsers, make_user, ctx, person, mail_log
):
    new = new_address()
    ask(me, new)
    (message,) = mail_to(ctx, mail_log, new)
    someone = make_user()
    theirs = browsers()
    sign_in(theirs, someone.email)
    assert follow_email_change_link(theirs, link_in(message)).status_code == 200
    assert stored_user(ctx, person.id).email == new
    assert stored_user(ctx, someone.id).email == someone.email
    assert signed_in(theirs), "following a link signs no one in or out"


def test_a_new_request_spends_the_link_before_it(me, browsers, ctx, person, mail_log):
    first, second = new_address(), new_address()
    ask(me, first)
    ask(me, second)
    (old_link,) = mail_to(ctx, mail_log, first)
    (new_link,) = mail_to(ctx, mail_log, second)
    assert follow_email_change_link(browsers(), link_in(old_link)).status_code == 400
    assert follow_email_change_link(browsers(), link_in(new_link)).status_code == 200
    assert stored_user(ctx, person.id).email == second


def test_the_current_address_is_told_when_a_change_is_asked(me, make_user, ctx, person, mail_log):
    """The owner hears of it while the link can still be stopped, for a free and a taken address alike."""
    for target in (new_address(), make_user().email):
        assert ask(me, target).status_code == 303
    notices = mail_to(ctx, mail_log, person.email, count=2)
    assert len(notices) == 2
    for text in notices:
        assert "Someone asked to change your email address" in text
        assert "/password/forgot" in text and not LINK.search(text)
    masked = sorted(re.search(r"change its email address to (\S+@\S+)\. ", text).group(1) for text in notices)  # type: ignore[union-attr]
    assert masked == ["m***@example.org", "p***@example.com"], "the new address, masked"


def reset_password(browser: TestClient, ctx, caplog: pytest.LogCaptureFixture, email: str) -> None:  # type: ignore[no-untyped-def]
    """The owner takes the account back by the emailed reset link."""
    assert post_form(browser, "/password/forgot", form_page="/password/forgot", email=email).status_code == 200
    deadline = time.monotonic() + 10
    while not (links := [RESET_LINK.search(text) for text in mail_to(ctx, caplog, email) if RESET_LINK.search(text)]):
        assert time.monotonic() < deadline, f"no reset link went to {email}"
        time.sleep(0.05)
    page = browser.get(links[-1].group(1))
    assert page.status_code == 200, page.text
    fields = {
        **hidden_fields(page.text),
        "password": "taken back passphrase 7",
        "password_confirm": "taken back passphrase 7",
    }
    assert browser.post("/password/reset", data=fields).status_code == 200


def test_a_password_reset_stops_a_change_asked_before_it(me, browsers, ctx, person, mail_log):
    """Whoever asked with a borrowed session and the password loses the link once the owner resets."""
    new = new_address()
    ask(me, new)
    (message,) = mail_to(ctx, mail_log, new)
    reset_password(browsers(), ctx, mail_log, person.email)
    response = follow_email_change_link(browsers(), link_in(message))
    assert response.status_code == 400
    assert "not valid" in alert_text(response)
    assert stored_user(ctx, person.id).email == person.email


def test_a_code_sent_to_the_old_address_dies_with_the_change(me, browsers, ctx, person, mail_log):
    """Whoever holds the old mailbox cannot finish a sign-in by code once the address moved on."""
    other = browsers()
    assert ask_for_code(other, person.email).status_code == 303
    (sent,) = mail_to(ctx, mail_log, person.email)
    code = EMAIL_CODE.search(sent)
    assert code, sent
    new = new_address()
    ask(me, new)
    assert follow_email_change_link(browsers(), link_in(mail_to(ctx, mail_log, new)[-1])).status_code == 200
    response = enter_code(other, code.group(1))
    assert response.status_code == 400
    assert not signed_in(other)


def test_a_locked_account_takes_no_password_here(me, ctx, person, mail_log):
    """A borrowed session cannot go on guessing the password once guesses locked the account: while
    it is locked even the right one is refused, and nothing is sent."""
    for _ in range(ctx.settings.lockout_attempts):
        assert ask(me, new_address(), "not the password").status_code == 400
    assert stored_user(ctx, person.id).locked_until is not None
    new = new_address()
    response = ask(me, new)
    assert response.status_code == 400
    assert "locked" in alert_text(response)
    assert events(ctx, person.id, "email_change_requested")[-1].detail == {"reason": "account_locked"}
    deliver_due(ctx)
    assert not [r for r in mail_log.records if r.getMessage().startswith(f"email to {new}\n")]


def test_a_link_of_a_disabled_account_or_a_garbage_token_does_nothing(me, browsers, ctx, person, mail_log):
    new = new_address()
    ask(me, new)
    (message,) = mail_to(ctx, mail_log, new)
    with ctx.db.begin() as db:
        db.get(User, person.id).disabled = True
    for path in (link_in(message), "/account/email/confirm", "/account/email/confirm?token=" + "x" * 500):
        response = browsers().get(path)
        assert response.status_code == 400
        assert "not valid" in alert_text(response)
    assert stored_user(ctx, person.id).email == person.email


def test_asking_again_and_again_for_one_address_is_limited(me, ctx, person):
    """Even with rate limiting off, and counted by the rate limiter, not from the audit log."""
    assert not ctx.settings.rate_limiting
    new = new_address()
    for _ in range(3):
        assert ask(me, new).status_code == 303
    with ctx.db.begin() as db:
        db.execute(delete(AuditEvent).where(AuditEvent.user_id == person.id))
    response = ask(me, new)
    assert response.status_code == 429
    assert re.search(r"ask again in \d+ seconds", alert_text(response))
    assert events(ctx, person.id, "email_change_requested")[-1].detail == {
        "recipient": "m***@example.org",
        "reason": "rate_limited",
    }
    assert ask(me, new_address()).status_code == 303, "another address is not held up"


def test_the_form_spends_the_verification_budget_of_the_address(base_environ, make_user):
    settings = make_settings(base_environ, IDP_RATE_LIMITING="on", IDP_RATE_LIMIT_VERIFICATION="1/hour")
    limited = create_app(settings)
    user = make_user()
    # An address of its own: with Redis the counts outlive this app, and other tests spend theirs.
    peer = (new_peer_address(), 50000)
    with TestClient(limited, base_url=TEST_ISSUER, follow_redirects=False, client=peer) as browser:
        sign_in(browser, user.email)
        assert ask(browser, new_address()).status_code == 303
        refused = ask(browser, new_address())
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
    limited.state.ctx.close()


def test_a_post_without_csrf_token_is_refused(me, ctx, person):
    response = me.post("/account/email", data={"email": new_address(), "current_password": PASSWORD})
    assert response.status_code == 400
    assert "expired" in alert_text(response)
    assert events(ctx, person.id, "email_change_requested") == []


def test_without_a_session_the_form_goes_to_login(http):
    for response in (http.get("/account/email"), http.post("/account/email", data={"csrf_token": "x"})):
        assert response.status_code == 303
        assert response.headers["location"] == "/login"


def test_an_account_without_a_password_needs_a_recent_sign_in(me, browsers, ctx, person, mail_log):
    drop_password(ctx, person.id)
    assert 'name="current_password"' not in me.get("/account/email").text
    new = new_address()
    assert ask(me, new, password=None).status_code == 303, "signed in just now"
    (message,) = mail_to(ctx, mail_log, new)
    age_sessions(ctx, person.id)
    refused = ask(me, new_address(), password=None)
    assert refused.status_code == 400
    assert "Sign in again" in alert_text(refused)
    assert events(ctx, person.id, "email_change_requested")[-1].detail == {"reason": "sign_in_too_old"}
    followed = follow_email_change_link(browsers(), link_in(message))
    assert followed.status_code == 200, "the link asked for in time still works"
    assert stored_user(ctx, person.id).email == new


def test_an_account_without_an_email_can_add_one(browsers, make_user, ctx, mail_log):
    phone = f"+98912{int.from_bytes(os.urandom(3), 'big') % 10_000_000:07d}"
    user = make_user(phone=phone)
    browser = browsers()
    sign_in(browser, user.email)
    with ctx.db.begin() as db:
        phone_only = db.get(User, user.id)
        phone_only.email, phone_only.email_verified = None, False
    page = browser.get("/account")
    assert '<a href="/account/email">Add an email address</a>' in page.text
    new = new_address()
    assert ask(browser, new).status_code == 303
    (message,) = mail_to(ctx, mail_log, new)
    assert follow_email_change_link(browsers(), link_in(message)).status_code == 200
    stored = stored_user(ctx, user.id)
    assert (stored.email, stored.email_verified, stored.phone) == (new, True, phone)
    assert events(ctx, user.id, "email_changed")[-1].detail == {"from": None, "to": "m***@example.org"}


# --- the API -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def documented(app) -> Documented:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url=TEST_ISSUER) as http:
        return Documented(http.get("/api/account/openapi.json").json())


@pytest.fixture
def token(browsers, make_client, person) -> str:  # type: ignore[no-untyped-def]
    return tokens_for(browsers(), make_client(first_party=True), person)["access_token"]


def api_ask(http: TestClient, token: str, **body: str):  # type: ignore[no-untyped-def]
    return http.post("/api/account/email", headers=bearer(token), json=body)


def test_the_api_sends_the_link_and_the_page_follows_it(http, browsers, ctx, token, person, mail_log, documented):
    new = new_address()
    response = api_ask(http, token, email=new, current_password=PASSWORD)
    assert response.status_code == 202, response.text
    assert response.json() == {"email": new, "expires_in": 24 * 60 * 60}
    documented.check(response, "/api/account/email", "post")
    assert http.get("/api/account", headers=bearer(token)).json()["email"] == person.email
    (message,) = mail_to(ctx, mail_log, new)
    assert follow_email_change_link(browsers(), link_in(message)).status_code == 200
    profile = http.get("/api/account", headers=bearer(token)).json()
    assert (profile["email"], profile["email_verified"]) == (new, True)
    assert events(ctx, person.id, "email_change_requested")[-1].client_id is not None


def test_the_api_answers_a_taken_address_like_a_free_one(http, make_user, token, documented):
    taken = api_ask(http, token, email=make_user().email, current_password=PASSWORD)
    free = api_ask(http, token, email=new_address(), current_password=PASSWORD)
    assert taken.status_code == free.status_code == 202
    assert taken.json().keys() == free.json().keys()
    documented.check(taken, "/api/account/email", "post")


@pytest.mark.parametrize("password", ["not the password", None])
def test_the_api_wants_the_current_password(http, ctx, token, person, password, documented):
    body = {"email": new_address()} | ({"current_password": password} if password is not None else {})
    response = api_ask(http, token, **body)
    assert_problem(response, 403, "wrong-password")
    documented.check(response, "/api/account/email", "post")
    assert stored_user(ctx, person.id).failed_sign_ins == 1


def test_the_api_refuses_what_is_not_a_new_address(http, token, person, documented):
    for email in ("nope", person.email):
        response = api_ask(http, token, email=email, current_password=PASSWORD)
        assert_problem(response, 422, "invalid-email")
        documented.check(response, "/api/account/email", "post")
    missing = http.post("/api/account/email", headers=bearer(token), json={"current_password": PASSWORD})
    assert assert_problem(missing, 422, "invalid-body")["errors"] == [{"pointer": "/email", "detail": "is required"}]


def test_the_api_limits_requests_for_one_address(http, token, documented):
    new = new_address()
    for _ in range(3):
        assert api_ask(http, token, email=new, current_password=PASSWORD).status_code == 202
    response = api_ask(http, token, email=new, current_password=PASSWORD)
    problem = assert_problem(response, 429, "too-many-emails")
    assert int(response.headers["retry-after"]) == problem["retry_after"] > 0
    documented.check(response, "/api/account/email", "post")


def test_the_api_takes_no_password_while_the_account_is_locked(http, ctx, token, person, documented):
    for _ in range(ctx.settings.lockout_attempts):
        assert_problem(api_ask(http, token, email=new_address(), current_password="not it"), 403, "wrong-password")
    response = api_ask(http, token, email=new_address(), current_password=PASSWORD)
    assert "locked" in assert_problem(response, 403, "account-locked")["detail"]
    documented.check(response, "/api/account/email", "post")


def test_the_api_wants_a_recent_sign_in_without_a_password(http, ctx, token, person, documented):
    drop_password(ctx, person.id)
    assert api_ask(http, token, email=new_address()).status_code == 202
    age_sessions(ctx, person.id)
    response = api_ask(http, token, email=new_address())
    assert_problem(response, 403, "sign-in-required")
    documented.check(response, "/api/account/email", "post")
