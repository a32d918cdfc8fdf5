"""The hosted pages under attack: what the page-level tests of each flow do not already cover.

An account with two-step verification must pass it however it signs in: a one-time code by email
or SMS proves only that channel, so an authenticator app (or a code on the other channel) is still
asked for.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import pyotp
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.accounts import totp
from idp.app import create_app
from idp.messaging.worker import deliver_due
from idp.storage import BrowserSession, User

from .conftest import TEST_ISSUER, make_settings
from .flows import (
    alert_text,
    ask_for_code,
    assert_signed_in,
    authorize_params,
    ctx_of,
    emailed_code,
    enter_code,
    exchange,
    hidden_fields,
    path_of,
    pkce_pair,
    query_of,
    session_cookies,
    submit_login,
)
from .test_account import random_phone
from .test_rate_limits import new_address


@pytest.fixture(autouse=True)
def _messages_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="idp.messages")


def with_second_factor(ctx, user_id: str, method: str) -> str | None:
    """Turn on ``method`` for the person; the authenticator secret when it is ``totp``."""
    secret = totp.new_secret() if method == "totp" else None
    sealed = totp.seal(ctx.secret_key, secret) if secret else None
    with ctx.db.begin() as db:
        db.execute(update(User).where(User.id == user_id).values(mfa_method=method, totp_secret=sealed))
    return secret


def latest_amr(ctx, user_id: str) -> list[str]:
    with ctx.db() as db:
        sessions = db.scalars(select(BrowserSession).where(BrowserSession.user_id == user_id)).all()
        return list(max(sessions, key=lambda s: s.auth_time).amr)


# --- two-step verification after a one-time code -------------------------------------------------


def test_an_email_code_does_not_skip_the_authenticator_app(http, ctx, make_user, caplog):
    person = make_user()
    secret = with_second_factor(ctx, person.id, "totp")
    assert ask_for_code(http, person.email).status_code == 303
    asked = enter_code(http, emailed_code(http, caplog, person.email))
    assert asked.status_code == 303, asked.text
    assert asked.headers["location"] == "/login/verify"
    assert not session_cookies(asked), "no session before the second factor"
    assert http.get("/account").status_code == 303
    assert "authenticator app" in http.get("/login/verify").text

    assert_signed_in(enter_code(http, pyotp.TOTP(secret).now()))
    assert latest_amr(ctx, person.id) == ["otp", "mfa"]


def test_an_email_code_and_a_wrong_authenticator_code_do_not_sign_in(http, ctx, make_user, caplog):
    person = make_user()
    secret = with_second_factor(ctx, person.id, "totp")
    ask_for_code(http, person.email)
    enter_code(http, emailed_code(http, caplog, person.email))
    wrong = f"{(int(pyotp.TOTP(secret).now()) + 500_000) % 1_000_000:06d}"
    refused = enter_code(http, wrong)
    assert refused.status_code == 400
    assert not session_cookies(refused)


def test_an_email_code_on_an_account_whose_second_factor_is_email_signs_in(http, ctx, make_user, caplog):
    """The code just proved the mailbox that the second step would send to: asking again adds nothing."""
    person = make_user()
    with_second_factor(ctx, person.id, "email")
    ask_for_code(http, person.email)
    assert_signed_in(enter_code(http, emailed_code(http, caplog, person.email)))
    assert latest_amr(ctx, person.id) == ["otp"]


def texted_code(client, caplog: pytest.LogCaptureFixture, phone: str) -> str:
    """The code in the last SMS to ``phone``, as the console backend logged it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        deliver_due(ctx_of(client))
        sent = [r.getMessage() for r in caplog.records if r.name == "idp.messages"]
        sent = [message for message in sent if message.startswith(f"sms to {phone}\n")]
        if sent:
            found = re.search(r"Your code is (\d{6})\.", sent[-1])
            assert found, sent[-1]
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no SMS to {phone}")


def test_an_email_code_does_not_skip_an_sms_second_factor(http, ctx, make_user, caplog):
    phone = random_phone()
    person = make_user(phone=phone)
    with_second_factor(ctx, person.id, "sms")
    ask_for_code(http, person.email)
    first = http.cookies.get("idp_signin")
    asked = enter_code(http, emailed_code(http, caplog, person.email))
    assert asked.headers["location"] == "/login/verify"
    assert not session_cookies(asked)
    assert http.cookies.get("idp_signin") not in (None, first), "the pending sign-in cookie is replaced"
    assert "to your phone" in http.get("/login/verify").text

    assert_signed_in(enter_code(http, texted_code(http, caplog, phone)))
    assert latest_amr(ctx, person.id) == ["otp", "sms", "mfa"]


def test_a_code_then_the_second_factor_continues_the_authorization_request(http, ctx, make_user, make_client, caplog):
    client = make_client(first_party=True)
    person = make_user()
    secret = with_second_factor(ctx, person.id, "totp")
    verifier, challenge = pkce_pair()
    started = http.get("/authorize", params=authorize_params(client, challenge))
    request_id = query_of(started.headers["location"])["request"]
    ask_for_code(http, person.email, request_id)
    asked = enter_code(http, emailed_code(http, caplog, person.email))
    assert asked.headers["location"] == "/login/verify"

    back = enter_code(http, pyotp.TOTP(secret).now())
    assert back.status_code == 303, back.text
    assert back.headers["location"].startswith(client.redirect_uri)
    code = query_of(back.headers["location"])["code"]
    tokens = exchange(http, client, code, verifier)
    assert tokens.status_code == 200, tokens.text
    claims = jwt.decode(tokens.json()["id_token"], options={"verify_signature": False})
    assert claims["amr"] == ["otp", "mfa"]


# --- CSRF: a token is good only in the browser it was issued to -----------------------------------

FORMS = {
    "/login": {"username": "someone@example.com", "password": "whatever it is"},
    "/login/code": {"identifier": "someone@example.com"},
    "/register": {
        "email": "someone@example.com",
        "password": "a long enough password",
        "password_confirm": "a long enough password",
    },
    "/password/forgot": {"email": "someone@example.com"},
    "/verify-email/resend": {"email": "someone@example.com"},
}


@pytest.mark.parametrize("path", sorted(FORMS))
def test_a_csrf_token_from_another_browser_is_refused(app, http, path):
    with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as other:
        token = hidden_fields(other.get("/login").text)["csrf_token"]
    http.get("/login")
    assert http.cookies.get("idp_csrf"), "this browser has a CSRF cookie of its own"
    refused = http.post(path, data={**FORMS[path], "csrf_token": token})
    assert refused.status_code == 400, refused.text
    assert "expired" in alert_text(refused)
    assert not [c for c in refused.headers.get_list("set-cookie") if not c.startswith("idp_csrf=")]


def test_consent_with_another_browsers_csrf_token_issues_no_code(app, http, make_client, make_user):
    client = make_client()
    person = make_user()
    _, challenge = pkce_pair()
    started = http.get("/authorize", params=authorize_params(client, challenge))
    signed_in = submit_login(http, started.headers["location"], person.email, person.password)
    consent = http.get(path_of(signed_in.headers["location"]))
    assert consent.status_code == 200, consent.text
    with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as other:
        token = hidden_fields(other.get("/login").text)["csrf_token"]
    fields = {**hidden_fields(consent.text), "csrf_token": token}
    for decision in ("allow", "deny"):
        refused = http.post("/consent", data={**fields, "decision": decision})
        assert refused.status_code == 400
        assert "location" not in refused.headers
    allowed = http.post("/consent", data={**hidden_fields(consent.text), "decision": "allow"})
    assert allowed.status_code == 303
    assert "code" in query_of(allowed.headers["location"]), "the request was still pending"


def _consent_page(http: TestClient, make_client, make_user) -> dict[str, str]:  # type: ignore[no-untyped-def]
    client = make_client()
    person = make_user()
    started = http.get("/authorize", params=authorize_params(client, pkce_pair()[1]))
    signed_in = submit_login(http, started.headers["location"], person.email, person.password)
    return hidden_fields(http.get(path_of(signed_in.headers["location"])).text)


def _answer_together(http: TestClient, fields: dict[str, str], decisions: tuple[str, str]) -> list[httpx.Response]:
    barrier = threading.Barrier(2)

    def answer(decision: str) -> httpx.Response:
        barrier.wait(timeout=10)
        return http.post("/consent", data={**fields, "decision": decision})

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(answer, decisions))


@pytest.mark.parametrize("decisions", [("allow", "allow"), ("allow", "deny")])
def test_a_pending_request_is_answered_once_even_by_two_clicks_at_once(http, make_client, make_user, decisions):
    """Two consent answers racing (a double click, two tabs): one redirects to the app, the other
    shows an error page (the request was answered, or is gone); never two redirects, never a 5xx."""
    for _ in range(3):
        answers = _answer_together(http, _consent_page(http, make_client, make_user), decisions)
        assert sorted(a.status_code for a in answers) == [303, 400], [a.text[:200] for a in answers]
        refused = next(a for a in answers if a.status_code == 400)
        assert re.search(r"already been answered|has expired", alert_text(refused))


def test_password_change_tries_on_the_account_page_are_rate_limited(base_environ, make_user):
    """As at sign-in: a stolen session gets a bounded number of guesses of the current password,
    and the right one is refused too once the budget is spent."""
    limited = create_app(make_settings(base_environ, IDP_RATE_LIMITING="on", IDP_RATE_LIMIT_SIGN_IN="3/hour"))
    person = make_user()
    new = "a quite different passphrase 42"
    try:
        # An address of its own: with Redis the counts outlive this app, and other tests spend theirs.
        with TestClient(limited, base_url=TEST_ISSUER, follow_redirects=False, client=(new_address(), 50000)) as web:
            page = web.get("/login")
            signed_in = web.post(
                "/login", data={**hidden_fields(page.text), "username": person.email, "password": person.password}
            )
            assert signed_in.headers["location"] == "/account"

            def change(current: str) -> httpx.Response:
                token = hidden_fields(web.get("/account").text)["csrf_token"]
                return web.post(
                    "/account/password",
                    data={"csrf_token": token, "current_password": current, "password": new, "password_confirm": new},
                )

            assert [change("not the password").status_code for _ in range(2)] == [400, 400]
            refused = change(person.password)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    finally:
        limited.state.ctx.close()
