"""Two-step sign-in: turning it on and off at /account/security, and signing in with it.

The HTTP tests run on a database of this module's own, so that no other process's delivery worker
(a live server of another test) takes the messages whose codes they read. Codes come from where a
person would read them: the authenticator key printed on the page, the console log of the email
backend, the request the real Twilio adapter sent to a stub, an email in an aiosmtpd sink.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import pyotp
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.accounts import second_factor, totp
from idp.accounts.users import create_user
from idp.app import create_app
from idp.context import Context
from idp.messaging.worker import deliver_due
from idp.migrate import upgrade
from idp.oauth.clients import create_client
from idp.storage import AuditEvent, BrowserSession, PendingSignIn, User, now

from . import test_browser, test_messaging
from .conftest import PASSWORD, TEST_ISSUER, LiveServer, make_settings, passwords_hashed_once, start_server
from .flows import (
    RegisteredClient,
    alert_text,
    authorize_params,
    hidden_fields,
    in_arabic_indic,
    in_persian,
    pkce_pair,
    query_of,
    session_cookies,
)
from .flows import TestUser as Person
from .services import smtp_sink
from .test_browser import exchange, verify_id_token
from .test_messaging import TWILIO_CREATED, TWILIO_SID, TWILIO_TOKEN

EXPIRED = "This setup has expired. Please start again."
UNVERIFIED = {
    "email": "Verify your email address first: codes can only go to a verified address.",
    "sms": "Add and verify a phone number first: codes can only go to a verified number.",
}

RECOVERY_CODE = re.compile(r"<code>([0-9a-f]{5}-[0-9a-f]{5})</code>")
TOTP_KEY = re.compile(r'<code id="totp-key">([A-Z2-7 ]+)</code>')
PHONE = "+14155550123"

# The relying app and browser tab of the browser tests, the provider stub of the messaging tests.
relying_app = test_browser.relying_app
rp = test_browser.rp
tab = test_browser.tab
stub = test_messaging.stub


# --- an app on a database of this module's own ------------------------------------------------


@pytest.fixture(scope="module")
def mfa_app(module_environ: dict[str, str], settings: Any) -> Iterator[Any]:
    """``settings`` (the shared one) has made the signing key this app signs with too."""
    application = create_app(make_settings(module_environ))
    yield application
    application.state.ctx.close()


@pytest.fixture
def mfa_ctx(mfa_app: Any) -> Context:
    return mfa_app.state.ctx


@pytest.fixture
def browser_of(mfa_app: Any) -> Iterator[Callable[[], TestClient]]:
    """``browser_of()``: a new browser (cookie jar) on the module's app; redirects not followed."""
    opened: list[TestClient] = []

    def open_one() -> TestClient:
        client = TestClient(mfa_app, base_url=TEST_ISSUER, follow_redirects=False)
        client.__enter__()
        opened.append(client)
        return client

    yield open_one
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def web(browser_of: Callable[[], TestClient]) -> TestClient:
    return browser_of()


@pytest.fixture
def messages(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="idp.messages")
    return caplog


def new_person(ctx: Context, **kwargs: Any) -> Person:
    kwargs.setdefault("email", f"mfa-{time.monotonic_ns()}@example.com")
    kwargs.setdefault("password", PASSWORD)
    kwargs.setdefault("verified", True)
    with ctx.db.begin() as db, passwords_hashed_once():
        user = create_user(db, **kwargs)
        return Person(id=user.id, email=user.email or "", password=kwargs["password"])


def new_app_client(ctx: Context, redirect_uri: str = "https://rp.example/cb") -> RegisteredClient:
    with ctx.db.begin() as db:
        made = create_client(
            db, ctx.secret_key, name="MFA app", redirect_uris=[redirect_uri], first_party=True, allow_http=True
        )
        return RegisteredClient(made.client.id, made.secret, redirect_uri)


def stored(ctx: Context, user_id: str) -> User:
    with ctx.db() as db:
        user = db.get(User, user_id)
        assert user is not None
        db.expunge(user)
        return user


def events(ctx: Context, user_id: str, name: str) -> list[AuditEvent]:
    with ctx.db() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.user_id == user_id, AuditEvent.event == name)))


def turn_on(ctx: Context, user_id: str, method: str) -> list[str]:
    """Set a second factor straight in the database, for tests about signing in with it."""
    with ctx.db.begin() as db:
        user = db.get(User, user_id)
        assert user is not None
        user.mfa_method = method
        return totp.new_recovery_codes(db, ctx.secret_key, user)


def age_sessions(ctx: Context, user_id: str, seconds: int = 10 * 60) -> None:
    """The person signed in a while ago: changes need the password again."""
    with ctx.db.begin() as db:
        db.execute(
            update(BrowserSession)
            .where(BrowserSession.user_id == user_id)
            .values(auth_time=BrowserSession.auth_time - seconds)
        )


def code_sent_to(ctx: Context, caplog: pytest.LogCaptureFixture, recipient: str) -> str:
    """The code in the latest message the console backends printed for ``recipient``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        deliver_due(ctx)
        printed = [r.getMessage() for r in caplog.records if r.name == "idp.messages"]
        mine = [m for m in printed if m.split("\n", 1)[0].endswith(f" to {recipient}")]
        if mine:
            found = re.search(r"\b(\d{6})\b", mine[-1].split("\n", 1)[1])
            assert found, mine[-1]
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no message reached {recipient}")


def password_sign_in(web: TestClient, person: Person, request_id: str | None = None) -> Any:
    page = web.get("/login", params={"request": request_id} if request_id else None)
    assert page.status_code == 200, page.text
    form = {**hidden_fields(page.text), "username": person.email, "password": person.password or ""}
    return web.post("/login", data=form)


def enter_code(web: TestClient, code: str) -> Any:
    page = web.get("/login/verify")
    assert page.status_code == 200, page.text
    return web.post("/login/verify", data={**hidden_fields(page.text), "code": code})


def security_post(web: TestClient, action: str, **fields: str) -> Any:
    page = web.get("/account/security")
    assert page.status_code == 200, page.text
    token = hidden_fields(page.text)["csrf_token"]
    return web.post(f"/account/security/{action}", data={"csrf_token": token, **fields})


def confirm(web: TestClient, enrol_page: Any, code: str) -> Any:
    return web.post("/account/security/confirm", data={**hidden_fields(enrol_page.text), "code": code})


def signed_in_browser(browser_of: Callable[[], TestClient], person: Person) -> TestClient:
    web = browser_of()
    response = password_sign_in(web, person)
    assert response.headers.get("location") == "/account", response.text
    return web


def enrol_totp(web: TestClient) -> tuple[str, list[str]]:
    """Turn on an authenticator app through the pages: its secret and the recovery codes."""
    page = security_post(web, "enable", method="totp")
    assert page.status_code == 200, page.text
    secret = TOTP_KEY.search(page.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    done = confirm(web, page, pyotp.TOTP(secret).now())
    assert done.status_code == 200, done.text
    return secret, RECOVERY_CODE.findall(done.text)


def next_step_code(secret: str) -> str:
    """The code of the next time step: unused yet, and still within the one step of drift allowed."""
    return pyotp.TOTP(secret).at(time.time() + totp.STEP)


def authorize(web: TestClient, client: RegisteredClient) -> tuple[str, str]:
    """Start at the app: the id of the authorization request the sign-in page carries, and the verifier."""
    verifier, challenge = pkce_pair()
    response = web.get("/authorize", params=authorize_params(client, challenge))
    assert response.status_code == 303 and urlsplit(response.headers["location"]).path == "/login", response.text
    return query_of(response.headers["location"])["request"], verifier


def id_token_claims(web: TestClient, client: RegisteredClient, callback: str, verifier: str) -> dict[str, Any]:
    assert callback.startswith(client.redirect_uri), callback
    response = web.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": query_of(callback)["code"],
            "redirect_uri": client.redirect_uri,
            "code_verifier": verifier,
        },
        auth=client.auth,
    )
    assert response.status_code == 200, response.text
    token = response.json()["id_token"]
    keys = jwt.PyJWKSet.from_dict(web.get("/jwks.json").json())
    key = next(k for k in keys.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=client.client_id, issuer=TEST_ISSUER)


def assert_waits_for_second_factor(response: Any) -> None:
    """The password was right, but there is no session until the second factor."""
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/login/verify"
    assert not session_cookies(response)


def assert_code_refused(response: Any) -> None:
    assert response.status_code == 400, response.text
    assert not session_cookies(response)
    assert "not right" in alert_text(response)


def assert_sign_in_ended(response: Any) -> None:
    assert response.status_code == 400, response.text
    assert not session_cookies(response)
    assert "one wrong code too many" in response.text


# --- the page ----------------------------------------------------------------------------------


def test_security_page_needs_a_session(web):
    assert web.get("/account/security").headers["location"] == "/login"
    refused = web.post("/account/security/enable", data={"method": "totp"})
    assert refused.status_code == 303 and refused.headers["location"] == "/login"


def test_security_page_shows_the_choices(mfa_ctx, browser_of):
    person = new_person(mfa_ctx, phone=PHONE.replace("0123", "0101"))
    web = signed_in_browser(browser_of, person)
    page = web.get("/account/security")
    assert page.status_code == 200
    assert "Off" in page.text
    assert re.search(r'<button[^>]*name="method" value="totp"', page.text)
    assert re.search(r'<button[^>]*name="method" value="email"', page.text)
    assert re.search(r'<button[^>]*name="method" value="sms"', page.text)
    assert 'name="current_password"' not in page.text, "a fresh session needs no password"


# --- authenticator app -------------------------------------------------------------------------


def test_totp_enrolment_turns_on_only_with_the_right_code(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    page = security_post(web, "enable", method="totp")
    assert page.status_code == 200, page.text
    assert re.search(r'<img[^>]*src="data:image/svg\+xml', page.text)
    secret = TOTP_KEY.search(page.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    enrolment = hidden_fields(page.text)["enrolment"]
    assert secret not in enrolment, "the hidden field carries the secret sealed"
    assert stored(mfa_ctx, person.id).mfa_method is None, "nothing changes before the code"

    current = {pyotp.TOTP(secret).at(time.time() + drift) for drift in (-30, 0, 30)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in current)
    refused = confirm(web, page, wrong)
    assert refused.status_code == 400
    assert "not right" in alert_text(refused)
    assert stored(mfa_ctx, person.id).mfa_method is None

    done = confirm(web, page, pyotp.TOTP(secret).now())
    assert done.status_code == 200, done.text
    codes = RECOVERY_CODE.findall(done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    user = stored(mfa_ctx, person.id)
    assert user.mfa_method == "totp"
    assert user.totp_secret and secret not in user.totp_secret
    assert totp.open_sealed(mfa_ctx.secret_key, user.totp_secret) == secret
    [enabled] = events(mfa_ctx, person.id, "second_factor_enabled")
    assert enabled.outcome == "success" and enabled.detail == {"method": "totp"}
    shown_again = web.get("/account/security")
    assert not RECOVERY_CODE.search(shown_again.text), "recovery codes are shown once"
    assert "10 unused recovery codes" in shown_again.text


def test_password_then_totp_signs_in_at_the_app(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    secret, _ = enrol_totp(signed_in_browser(browser_of, person))
    client = new_app_client(mfa_ctx)

    web = browser_of()
    request_id, verifier = authorize(web, client)
    assert_waits_for_second_factor(password_sign_in(web, person, request_id))
    assert web.get("/account").headers["location"] == "/login", "no session yet"
    code = next_step_code(secret)
    response = enter_code(web, code)
    assert response.status_code == 303, response.text
    claims = id_token_claims(web, client, response.headers["location"], verifier)
    assert claims["sub"] == person.id
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == "2"

    replay = browser_of()
    assert_waits_for_second_factor(password_sign_in(replay, person))
    assert_code_refused(enter_code(replay, code))


def test_the_confirming_code_cannot_sign_in(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    page = security_post(web, "enable", method="totp")
    secret = TOTP_KEY.search(page.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    used = pyotp.TOTP(secret).now()
    assert confirm(web, page, used).status_code == 200

    other = browser_of()
    assert_waits_for_second_factor(password_sign_in(other, person))
    assert_code_refused(enter_code(other, used))


def test_a_recovery_code_signs_in_once(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    _, codes = enrol_totp(signed_in_browser(browser_of, person))

    web = browser_of()
    assert_waits_for_second_factor(password_sign_in(web, person))
    response = enter_code(web, codes[3].upper())
    assert response.status_code == 303 and response.headers["location"] == "/account", response.text
    assert session_cookies(response)
    assert "9 unused recovery codes" in web.get("/account/security").text

    again = browser_of()
    assert_waits_for_second_factor(password_sign_in(again, person))
    assert_code_refused(enter_code(again, codes[3]))


def test_authenticator_and_recovery_codes_in_persian_and_arabic_indic_digits(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    page = security_post(web, "enable", method="totp")
    secret = TOTP_KEY.search(page.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    done = confirm(web, page, in_persian(pyotp.TOTP(secret).now()))
    assert done.status_code == 200, done.text
    codes = RECOVERY_CODE.findall(done.text)

    by_authenticator = browser_of()
    assert_waits_for_second_factor(password_sign_in(by_authenticator, person))
    response = enter_code(by_authenticator, in_arabic_indic(next_step_code(secret)))
    assert response.status_code == 303 and response.headers["location"] == "/account", response.text

    by_recovery_code = browser_of()
    assert_waits_for_second_factor(password_sign_in(by_recovery_code, person))
    recovery_code = next(code for code in codes if any(c.isdigit() for c in code))
    response = enter_code(by_recovery_code, in_persian(recovery_code))
    assert response.status_code == 303 and response.headers["location"] == "/account", response.text


def test_new_recovery_codes_replace_the_old(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    _, old = enrol_totp(web)
    page = security_post(web, "recovery-codes")
    assert page.status_code == 200, page.text
    new = RECOVERY_CODE.findall(page.text)
    assert len(new) == 10 and not set(new) & set(old)
    assert events(mfa_ctx, person.id, "recovery_codes_regenerated")

    other = browser_of()
    assert_waits_for_second_factor(password_sign_in(other, person))
    assert_code_refused(enter_code(other, old[0]))
    assert enter_code(other, new[0]).status_code == 303


def test_an_enrolment_belongs_to_one_person_and_expires(mfa_ctx, browser_of, monkeypatch):
    ann, bob = new_person(mfa_ctx), new_person(mfa_ctx)
    ann_web, bob_web = signed_in_browser(browser_of, ann), signed_in_browser(browser_of, bob)
    page = security_post(ann_web, "enable", method="totp")
    secret = TOTP_KEY.search(page.text).group(1).replace(" ", "")  # type: ignore[union-attr]

    stolen = bob_web.post(
        "/account/security/confirm",
        data={
            "csrf_token": hidden_fields(bob_web.get("/account/security").text)["csrf_token"],
            "enrolment": hidden_fields(page.text)["enrolment"],
            "code": pyotp.TOTP(secret).now(),
        },
    )
    assert stolen.status_code == 400
    assert alert_text(stolen) == EXPIRED
    assert stored(mfa_ctx, bob.id).mfa_method is None

    later = now() + second_factor.ENROLMENT_LIFETIME
    monkeypatch.setattr(second_factor, "now", lambda: later)
    expired = confirm(ann_web, page, pyotp.TOTP(secret).now())
    assert expired.status_code == 400
    assert alert_text(expired) == EXPIRED
    assert stored(mfa_ctx, ann.id).mfa_method is None


# --- codes by email and SMS --------------------------------------------------------------------


def test_email_second_factor(mfa_ctx, browser_of, messages):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    page = security_post(web, "enable", method="email")
    assert page.status_code == 200, page.text
    assert person.email in page.text
    assert stored(mfa_ctx, person.id).mfa_method is None
    [sent] = [e for e in events(mfa_ctx, person.id, "code_sent") if e.detail["purpose"] == "enable_mfa"]
    assert sent.detail == {"channel": "email", "purpose": "enable_mfa"}
    done = confirm(web, page, code_sent_to(mfa_ctx, messages, person.email))
    assert done.status_code == 200, done.text
    assert len(RECOVERY_CODE.findall(done.text)) == 10
    assert stored(mfa_ctx, person.id).mfa_method == "email"
    assert events(mfa_ctx, person.id, "second_factor_enabled")[0].detail == {"method": "email"}

    client = new_app_client(mfa_ctx)
    signing_in = browser_of()
    request_id, verifier = authorize(signing_in, client)
    messages.clear()
    assert_waits_for_second_factor(password_sign_in(signing_in, person, request_id))
    response = enter_code(signing_in, code_sent_to(mfa_ctx, messages, person.email))
    assert response.status_code == 303, response.text
    amr = id_token_claims(signing_in, client, response.headers["location"], verifier)["amr"]
    assert "otp" in amr and "mfa" in amr and "pwd" in amr


def test_code_factors_need_a_verified_destination(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    with mfa_ctx.db.begin() as db:
        db.execute(update(User).where(User.id == person.id).values(email_verified=False))
    page = web.get("/account/security")
    assert 'value="email"' not in page.text and 'value="sms"' not in page.text
    for method in ("email", "sms"):
        refused = security_post(web, "enable", method=method)
        assert refused.status_code == 400
        assert alert_text(refused) == UNVERIFIED[method]
    assert stored(mfa_ctx, person.id).mfa_method is None


@pytest.mark.parametrize("code", ["²²²²²²", "１２３４５６"])
def test_digits_of_other_scripts_are_a_wrong_authenticator_code_not_an_error(mfa_ctx, browser_of, code):
    """str.isdigit() takes them; comparing them in constant time raised TypeError, a 500."""
    web = signed_in_browser(browser_of, new_person(mfa_ctx))
    page = security_post(web, "enable", method="totp")
    refused = confirm(web, page, code)
    assert refused.status_code == 400 and "not right" in alert_text(refused)


def test_a_wrong_enrolment_code_turns_nothing_on(mfa_ctx, browser_of, messages):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    page = security_post(web, "enable", method="email")
    right = code_sent_to(mfa_ctx, messages, person.email)
    refused = confirm(web, page, f"{(int(right) + 1) % 1_000_000:06d}")
    assert refused.status_code == 400 and "not right" in alert_text(refused)
    assert stored(mfa_ctx, person.id).mfa_method is None


def test_sms_second_factor_through_twilio(module_environ, mfa_ctx, stub):
    stub.answers = [TWILIO_CREATED]
    app = create_app(
        make_settings(
            module_environ,
            IDP_SMS_BACKEND="twilio",
            IDP_TWILIO_ACCOUNT_SID=TWILIO_SID,
            IDP_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
            IDP_TWILIO_FROM="+15005550006",
            IDP_TWILIO_API_BASE=stub.url,
        )
    )
    ctx = app.state.ctx
    person = new_person(ctx, phone=PHONE)

    def sms_code() -> str:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            deliver_due(ctx)
            mine = [r for r in stub.requests if r.form().get("To") == [PHONE]]
            if len(mine) > seen:
                request = mine[-1]
                assert request.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
                assert request.headers["authorization"].startswith("Basic ")
                form = request.form()
                assert form["From"] == ["+15005550006"]
                return re.search(r"\b(\d{6})\b", form["Body"][0]).group(1)  # type: ignore[union-attr]
            time.sleep(0.05)
        raise AssertionError("no SMS reached the Twilio stub")

    try:
        with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as web:
            assert password_sign_in(web, person).headers["location"] == "/account"
            seen = 0
            page = security_post(web, "enable", method="sms")
            assert page.status_code == 200 and PHONE in page.text, page.text
            assert confirm(web, page, sms_code()).status_code == 200
            assert stored(ctx, person.id).mfa_method == "sms"

        client = new_app_client(ctx)
        with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as web:
            request_id, verifier = authorize(web, client)
            seen = 1
            assert_waits_for_second_factor(password_sign_in(web, person, request_id))
            response = enter_code(web, sms_code())
            assert response.status_code == 303, response.text
            amr = id_token_claims(web, client, response.headers["location"], verifier)["amr"]
            assert amr == ["pwd", "sms", "mfa"]
    finally:
        ctx.close()


def test_three_wrong_codes_spend_the_code(mfa_ctx, browser_of, messages):
    person = new_person(mfa_ctx)
    turn_on(mfa_ctx, person.id, "email")
    web = browser_of()
    assert_waits_for_second_factor(password_sign_in(web, person))
    right = code_sent_to(mfa_ctx, messages, person.email)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(2):
        assert_code_refused(enter_code(web, wrong))
    assert_sign_in_ended(enter_code(web, wrong))
    ended = web.get("/login/verify")
    assert ended.status_code == 400 and "start again" in ended.text, "three wrong codes end the sign-in"
    fields = hidden_fields(browser_of().get("/login").text)
    assert web.post("/login/verify", data={**fields, "code": right}).status_code == 400


def test_wrong_authenticator_codes_end_the_sign_in_and_count_toward_the_lockout(mfa_ctx, browser_of):
    """An authenticator code has no resend limit to protect it: three wrong codes end the pending
    sign-in, and each counts like a wrong password, so signing in again and again cannot guess it."""
    person = new_person(mfa_ctx)
    secret = pyotp.random_base32()
    with mfa_ctx.db.begin() as db:
        user = db.get(User, person.id)
        user.mfa_method = "totp"
        user.totp_secret = totp.seal(mfa_ctx.secret_key, secret)
    wrong = f"{(int(pyotp.TOTP(secret).now()) + 500_000) % 1_000_000:06d}"
    web = browser_of()
    assert_waits_for_second_factor(password_sign_in(web, person))
    for _ in range(2):
        assert_code_refused(enter_code(web, wrong))
    assert_sign_in_ended(enter_code(web, wrong))
    assert web.get("/login/verify").status_code == 400
    assert_waits_for_second_factor(password_sign_in(web, person))
    for _ in range(2):
        assert_code_refused(enter_code(web, wrong))
    with mfa_ctx.db() as db:
        user = db.get(User, person.id)
        assert user.locked_until is not None, "five wrong codes in a row lock the account"
    refused = password_sign_in(web, person)
    assert refused.status_code == 400, "a locked account answers like a wrong password"


def test_resend_limit_shows_a_wait(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    turn_on(mfa_ctx, person.id, "email")
    web = browser_of()
    assert_waits_for_second_factor(password_sign_in(web, person))
    fields = hidden_fields(web.get("/login/verify").text)
    answers = [web.post("/login/verify/resend", data=fields) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert re.search(r"ask for a new one in \d+ seconds", alert_text(answers[-1]))
    assert re.search(r"<button[^>]*disabled", answers[-1].text)


def test_a_pending_sign_in_ends_after_ten_minutes(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    secret, _ = enrol_totp(signed_in_browser(browser_of, person))
    web = browser_of()
    assert_waits_for_second_factor(password_sign_in(web, person))
    fields = hidden_fields(web.get("/login/verify").text)
    with mfa_ctx.db.begin() as db:
        db.execute(update(PendingSignIn).where(PendingSignIn.user_id == person.id).values(expires_at=now() - 1))
    response = web.post("/login/verify", data={**fields, "code": next_step_code(secret)})
    assert response.status_code == 400
    assert "expired" in alert_text(response)
    assert not session_cookies(response)


# --- turning it off, and what every change needs -----------------------------------------------


def test_turning_off_needs_the_password(mfa_ctx, browser_of, messages):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    _, codes = enrol_totp(web)
    age_sessions(mfa_ctx, person.id)
    assert 'name="current_password"' in web.get("/account/security").text

    for password in ("", "not the password"):
        refused = security_post(web, "disable", current_password=password)
        assert refused.status_code == 400
        assert alert_text(refused) == "Your current password is not right."
        assert stored(mfa_ctx, person.id).mfa_method == "totp"
    assert len(events(mfa_ctx, person.id, "reauthentication")) == 2

    messages.clear()
    done = security_post(web, "disable", current_password=PASSWORD)
    assert done.status_code == 200, done.text
    assert "Two-step sign-in is off." in done.text
    user = stored(mfa_ctx, person.id)
    assert user.mfa_method is None and user.totp_secret is None
    with mfa_ctx.db() as db:
        assert totp.remaining_recovery_codes(db, user) == 0
    [disabled] = events(mfa_ctx, person.id, "second_factor_disabled")
    assert disabled.detail == {"method": "totp"}
    notice = f"email to {person.email}\nSubject: Two-step sign-in is off for your account · idp\n"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(r.getMessage().startswith(notice) for r in messages.records):
        deliver_due(mfa_ctx)  # the subject is sealed in the outbox: read it from what was sent
        time.sleep(0.05)
    assert any(r.getMessage().startswith(notice) for r in messages.records)

    other = browser_of()
    assert password_sign_in(other, person).headers["location"] == "/account"


def test_a_locked_account_takes_no_password_to_turn_it_off(mfa_ctx, browser_of):
    """While wrong passwords keep the account locked, the right one works here no more than at sign-in."""
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    enrol_totp(web)
    age_sessions(mfa_ctx, person.id)
    with mfa_ctx.db.begin() as db:
        db.execute(update(User).where(User.id == person.id).values(locked_until=now() + 600))

    refused = security_post(web, "disable", current_password=PASSWORD)
    assert refused.status_code == 400
    assert "locked" in alert_text(refused)
    assert stored(mfa_ctx, person.id).mfa_method == "totp"


def test_wrong_passwords_to_turn_it_off_lock_the_account(mfa_ctx, browser_of):
    """They count toward the lockout as wrong passwords at sign-in do, and the lock then refuses
    even the right one here."""
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    enrol_totp(web)
    age_sessions(mfa_ctx, person.id)
    for _ in range(mfa_ctx.settings.lockout_attempts):
        refused = security_post(web, "disable", current_password="not the password")
        assert refused.status_code == 400 and "not right" in alert_text(refused)
    assert stored(mfa_ctx, person.id).locked_until is not None
    refused = security_post(web, "disable", current_password=PASSWORD)
    assert "locked" in alert_text(refused)
    assert stored(mfa_ctx, person.id).mfa_method == "totp"


def test_a_passwordless_account_with_an_old_session_must_sign_in_again(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    with mfa_ctx.db.begin() as db:
        db.execute(update(User).where(User.id == person.id).values(password_hash=None))
    assert security_post(web, "enable", method="totp").status_code == 200, "signed in just now"
    age_sessions(mfa_ctx, person.id)
    refused = security_post(web, "enable", method="totp")
    assert refused.status_code == 400
    assert "Sign in again" in alert_text(refused)
    assert events(mfa_ctx, person.id, "reauthentication")[-1].outcome == "failure"


def test_turning_on_with_an_old_session_needs_the_password(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    age_sessions(mfa_ctx, person.id)
    refused = security_post(web, "enable", method="totp")
    assert refused.status_code == 400
    assert alert_text(refused) == "Your current password is not right."
    assert not TOTP_KEY.search(refused.text)
    page = security_post(web, "enable", method="totp", current_password=PASSWORD)
    assert page.status_code == 200 and TOTP_KEY.search(page.text)


def test_every_change_needs_the_csrf_token(mfa_ctx, browser_of):
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    page = security_post(web, "enable", method="totp")
    secret = TOTP_KEY.search(page.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    enrolment = hidden_fields(page.text)["enrolment"]
    for action, form in [
        ("enable", {"method": "totp"}),
        ("confirm", {"enrolment": enrolment, "code": pyotp.TOTP(secret).now()}),
        ("disable", {}),
        ("recovery-codes", {}),
    ]:
        for token in (None, "forged"):
            data = form if token is None else {**form, "csrf_token": token}
            refused = web.post(f"/account/security/{action}", data=data)
            assert refused.status_code == 400, action
            assert "expired" in alert_text(refused)
    assert stored(mfa_ctx, person.id).mfa_method is None


# --- in Chromium -------------------------------------------------------------------------------


def test_browser_password_and_totp_from_an_app(tab, make_user, live_server, rp):
    person = make_user(name="Tess Totp")
    page = tab.page
    page.goto(live_server.url + "/login")
    tab.sign_in(person.email, person.password)
    page.goto(live_server.url + "/account/security")
    tab.submit("button[name=method][value=totp]")
    assert page.locator("img.qr").get_attribute("src").startswith("data:image/svg+xml")
    secret = page.inner_text("#totp-key").replace(" ", "")
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    tab.submit("button[type=submit]")
    assert page.locator("ul.recovery-codes li").count() == 10

    page.context.clear_cookies()
    params, verifier = tab.authorize()
    tab.sign_in(person.email, person.password)
    assert tab.path() == "/login/verify", page.url
    page.fill("input[name=code]", next_step_code(secret))
    tab.submit("form[action='/login/verify'] button[type=submit]")
    assert tab.path() == "/consent", page.url
    page.click("button[name=decision][value=allow]")
    callback = tab.wait_for_callback()
    assert callback.params["state"] == params["state"]
    claims = verify_id_token(live_server, rp, exchange(live_server, rp, callback.params["code"], verifier)["id_token"])
    assert claims["sub"] == person.id
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "2"
    assert tab.csp_violations() == []


def test_browser_step_up_asks_for_the_authenticator_code_alone(tab, make_user, live_server, rp):
    """In Chromium: signed in with the password, then an authenticator app turned on; an app that
    insists on acr 2 gets it by the authenticator's code alone, without the password again."""
    person = make_user(name="Sam Stepup")
    page = tab.page
    page.goto(live_server.url + "/login")
    tab.sign_in(person.email, person.password)
    page.goto(live_server.url + "/account/security")
    tab.submit("button[name=method][value=totp]")
    secret = page.inner_text("#totp-key").replace(" ", "")
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    tab.submit("button[type=submit]")

    _, verifier = tab.authorize(claims=ACR_2)
    assert tab.path() == "/login/step-up", page.url
    assert "authenticator app" in page.inner_text("main")
    tab.submit("form[action='/login/step-up'] button[type=submit]")
    assert tab.path() == "/login/verify", page.url
    page.fill("input[name=code]", next_step_code(secret))
    tab.submit("form[action='/login/verify'] button[type=submit]")
    assert tab.path() == "/consent", page.url
    page.click("button[name=decision][value=allow]")
    callback = tab.wait_for_callback()
    claims = verify_id_token(live_server, rp, exchange(live_server, rp, callback.params["code"], verifier)["id_token"])
    assert claims["acr"] == "2" and claims["amr"] == ["pwd", "otp", "mfa"]
    assert tab.csp_violations() == []


def test_browser_password_and_email_code_from_an_app(browser, base_environ, own_database_url, tmp_path, relying_app):
    sink, controller = smtp_sink()
    url = own_database_url
    upgrade(url)
    environ = {
        **base_environ,
        "IDP_DATABASE_URL": url,
        "IDP_EMAIL_BACKEND": "smtp",
        "IDP_SMTP_HOST": "127.0.0.1",
        "IDP_SMTP_PORT": str(controller.port),
    }
    process, server_url = start_server(environ, tmp_path / "serve.log")
    server = LiveServer(server_url, environ | {"IDP_ISSUER": server_url}, process, Path(tmp_path / "serve.log"))
    ctx = Context.build(make_settings(environ))
    context = browser.new_context()
    try:
        person = new_person(ctx)
        turn_on(ctx, person.id, "email")
        app_client = new_app_client(ctx, relying_app.origin + "/cb")
        page = context.new_page()
        page.set_default_timeout(15_000)
        verifier, challenge = pkce_pair()
        params = authorize_params(app_client, challenge)
        page.goto(f"{server_url}/authorize?{urlencode(params)}")
        page.fill("input[name=username]", person.email)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert urlsplit(page.url).path == "/login/verify", page.url

        deadline = time.monotonic() + 15
        while not sink.received and time.monotonic() < deadline:
            time.sleep(0.1)
        [mail] = [m for m in sink.received if person.email in m.rcpt_tos]
        code = re.search(r"\b(\d{6})\b", mail.message.get_body(("plain",)).get_content()).group(1)  # type: ignore[union-attr]
        page.fill("input[name=code]", code)
        with page.expect_navigation():
            page.click("form[action='/login/verify'] button[type=submit]")
        page.wait_for_url(relying_app.origin + "/**")
        callback = relying_app.callbacks[-1]
        assert callback.params["state"] == params["state"]
        tokens = exchange(server, app_client, callback.params["code"], verifier)
        amr = verify_id_token(server, app_client, tokens["id_token"])["amr"]
        assert "otp" in amr and "mfa" in amr
    finally:
        context.close()
        ctx.close()
        process.terminate()
        process.wait(timeout=10)
        controller.stop()


ACR_2 = json.dumps({"id_token": {"acr": {"essential": True, "values": ["2"]}}})


def sent_to(caplog: pytest.LogCaptureFixture, recipient: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "idp.messages" and f" to {recipient}" in r.getMessage()]


def sessions_of(ctx: Context, user_id: str) -> list[BrowserSession]:
    with ctx.db() as db:
        return list(db.scalars(select(BrowserSession).where(BrowserSession.user_id == user_id)))


def test_an_essential_acr_2_asks_a_password_session_for_the_second_factor_alone(mfa_ctx, browser_of, messages):
    """OIDC Core §5.5.1.1: a session signed in with the password alone (before two-step sign-in
    was turned on) does not reach acr 2. An app that insists on it has the person give their second
    factor, not their password again: opening the page sends nothing (anyone can link there), its
    button sends the code, and the code makes a new session in place of the old, at acr 2."""
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    turn_on(mfa_ctx, person.id, "email")
    [before] = sessions_of(mfa_ctx, person.id)
    client = new_app_client(mfa_ctx)
    verifier, challenge = pkce_pair()

    without = web.get("/authorize", params=authorize_params(client, challenge, claims=ACR_2, prompt="none"))
    assert query_of(without.headers["location"])["error"] == "login_required"

    messages.clear()
    response = web.get("/authorize", params=authorize_params(client, challenge, claims=ACR_2))
    assert response.status_code == 303 and urlsplit(response.headers["location"]).path == "/login/step-up"
    page = web.get(response.headers["location"])
    assert page.status_code == 200 and "Confirm it is you" in page.text, page.text
    assert "We will send a code to your email address." in page.text
    deliver_due(mfa_ctx)
    assert sent_to(messages, person.email) == [], "opening the page sends no code"
    assert (
        web.get("/consent", params={"request": query_of(response.headers["location"])["request"]})
        .headers["location"]
        .startswith("/login/step-up?")
    ), "the consent page cannot be reached around it"

    started = web.post("/login/step-up", data=hidden_fields(page.text))
    assert_waits_for_second_factor(started)
    response = enter_code(web, code_sent_to(mfa_ctx, messages, person.email))
    assert response.status_code == 303, response.text
    claims = id_token_claims(web, client, response.headers["location"], verifier)
    assert claims["acr"] == "2" and claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["auth_time"] >= before.auth_time
    sessions = {session.id: session for session in sessions_of(mfa_ctx, person.id)}
    assert sessions[before.id].ended_at is not None, "the password-only session is replaced"
    [after] = [session for session in sessions.values() if session.ended_at is None]
    assert after.amr == ["pwd", "otp", "mfa"] and after.expires_at - after.created_at == (
        before.expires_at - before.created_at
    )
    assert claims["sid"] == after.id


def test_a_session_of_a_code_alone_signs_in_again_for_acr_2(mfa_ctx, browser_of, messages):
    """Which channel proved a session of a one-time code is not kept: the person signs in again,
    where a password and the second factor reach acr 2."""
    person = new_person(mfa_ctx)
    web = signed_in_browser(browser_of, person)
    turn_on(mfa_ctx, person.id, "email")
    with mfa_ctx.db.begin() as db:
        db.execute(update(BrowserSession).where(BrowserSession.user_id == person.id).values(amr=["otp"]))
    client = new_app_client(mfa_ctx)
    verifier, challenge = pkce_pair()
    response = web.get("/authorize", params=authorize_params(client, challenge, claims=ACR_2))
    assert response.status_code == 303 and urlsplit(response.headers["location"]).path == "/login", response.text
    request = query_of(response.headers["location"])["request"]
    assert web.get("/login/step-up", params={"request": request}).headers["location"].startswith("/login?")
    messages.clear()
    assert_waits_for_second_factor(password_sign_in(web, person, request))
    response = enter_code(web, code_sent_to(mfa_ctx, messages, person.email))
    claims = id_token_claims(web, client, response.headers["location"], verifier)
    assert claims["acr"] == "2" and "mfa" in claims["amr"]
