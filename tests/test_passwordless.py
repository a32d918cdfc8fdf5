"""Passwordless sign-in with a one-time code by email or SMS, over HTTP and in Chromium.

Every test here runs its own app on a database of this module's own: the session's live server
(a separate process with the console backends) would otherwise deliver the messages, where the
log capture and the Twilio stub cannot see them. Email codes are read from the "idp.messages" log;
SMS goes through the real Twilio adapter to a local stub that checks the exact Messages API
request, and the code is read from what the stub received.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from idp.accounts.users import create_user, disable_user
from idp.context import Context
from idp.messaging.worker import deliver_due
from idp.oauth.clients import create_client
from idp.sso import start_session
from idp.storage import AuditEvent, BrowserSession, OneTimeCode, User

from .conftest import TEST_ISSUER, make_settings, passwords_hashed_once, start_server
from .flows import (
    RegisteredClient,
    alert_text,
    ask_for_code,
    authorize_params,
    ctx_of,
    emailed_code,
    enter_code,
    hidden_fields,
    in_arabic_indic,
    in_persian,
    messages_to,
    path_of,
    pkce_pair,
    query_of,
)
from .services import QuietHandler, http_server, running_app

TWILIO_SID = "AC" + "5" * 32
TWILIO_TOKEN = "twilio-token-for-passwordless-tests"
TWILIO_FROM = "+15005550006"
SMS_BODY = re.compile(r"^Your code is (\d{6})\. It expires in 5 minutes\. Do not share it\.$")
WAIT = r"Too many codes were sent\. You can ask for a new one in (\d+) seconds\."
_CSRF = re.compile(r'name="csrf_token" value="[^"]*"')


# --- a Twilio stub that is also the relying app's callback --------------------------------------


@dataclass
class Stub:
    """Twilio's Messages API on 127.0.0.1 (POST) and a relying app's redirect URI (GET /cb)."""

    url: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def code_for(self, phone: str, timeout: float = 15.0) -> str:
        """The code in the last SMS to ``phone``, waiting for a worker to send it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.problems == []
            sent = [m["Body"] for m in self.messages if m["To"] == phone]
            if sent:
                found = SMS_BODY.match(sent[-1])
                assert found, sent[-1]
                return found.group(1)
            time.sleep(0.05)
        raise AssertionError(f"no SMS reached the Twilio stub for {phone}")


def _check_twilio_request(handler: BaseHTTPRequestHandler, body: bytes) -> dict[str, str] | str:
    """The request Twilio documents, or what is wrong with it."""
    expected_auth = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    if handler.path != f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json":
        return f"path {handler.path}"
    if handler.headers.get("Authorization") != expected_auth:
        return "authorization"
    if handler.headers.get("Content-Type") != "application/x-www-form-urlencoded":
        return f"content type {handler.headers.get('Content-Type')}"
    form = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
    if sorted(form) != ["Body", "From", "To"] or any(len(v) != 1 for v in form.values()):
        return f"fields {sorted(form)}"
    if form["From"] != [TWILIO_FROM]:
        return f"from {form['From']}"
    return {name: values[0] for name, values in form.items()}


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            checked = _check_twilio_request(self, body)
            if isinstance(checked, str):
                state.problems.append(checked)
                self._answer(400, {"code": 21604, "message": checked})
                return
            state.messages.append(checked)
            self._answer(201, {"sid": "SM" + secrets.token_hex(16), "status": "queued", "to": checked["To"]})

        def do_GET(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != "/cb":
                self._answer(404, {})
                return
            state.callbacks.append(state.url + self.path)
            self._answer(200, {"app": "back at the relying app"})

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            self.respond(status, json.dumps(payload).encode())

    with http_server(Handler) as url:
        state.url = url
        yield state


def twilio_settings(stub: Stub) -> dict[str, str]:
    return {
        "IDP_SMS_BACKEND": "twilio",
        "IDP_TWILIO_API_BASE": stub.url,
        "IDP_TWILIO_ACCOUNT_SID": TWILIO_SID,
        "IDP_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "IDP_TWILIO_FROM": TWILIO_FROM,
    }


# --- apps on this module's database -------------------------------------------------------------


@pytest.fixture
def site(module_environ: dict[str, str]) -> Iterator[TestClient]:
    with running_app(module_environ) as client:
        yield client


@pytest.fixture
def sms_site(module_environ: dict[str, str], stub: Stub) -> Iterator[TestClient]:
    with running_app(module_environ, IDP_PHONE_DEFAULT_REGION="IR", **twilio_settings(stub)) as client:
        yield client


@pytest.fixture
def closed_site(module_environ: dict[str, str]) -> Iterator[TestClient]:
    with running_app(module_environ, IDP_SELF_REGISTRATION="off") as client:
        yield client


@pytest.fixture(autouse=True)
def _messages_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="idp.messages")


def new_email() -> str:
    return f"pl-{secrets.token_hex(5)}@example.com"


def new_phone() -> str:
    """An Iranian mobile number no other test uses."""
    return f"+98912{secrets.randbelow(10**7):07d}"


def add_user(client: TestClient, **kwargs: Any) -> User:
    kwargs.setdefault("verified", True)
    with ctx_of(client).db.begin() as db, passwords_hashed_once():
        user = create_user(db, **kwargs)
        db.expunge(user)
        return user


def stored_user(client: TestClient, **where: str) -> User | None:
    with ctx_of(client).db() as db:
        user = db.scalar(select(User).filter_by(**where))
        if user is not None:
            db.expunge(user)
        return user


def add_client(client: TestClient, **kwargs: Any) -> RegisteredClient:
    with ctx_of(client).db.begin() as db:
        made = create_client(db, ctx_of(client).secret_key, name="Passwordless app", allow_http=True, **kwargs)
        return RegisteredClient(made.client.id, made.secret, made.client.redirect_uris[0])


# --- steps --------------------------------------------------------------------------------------


def resend(client: TestClient) -> httpx.Response:
    page = client.get("/login/verify")
    assert page.status_code == 200, page.text
    return client.post("/login/verify/resend", data=hidden_fields(page.text))


def texted_code(client: TestClient, stub: Stub, phone: str) -> str:
    deliver_due(ctx_of(client))
    return stub.code_for(phone)


def without_csrf(text: str) -> str:
    return _CSRF.sub("", text)


def signed_in_amr(client: TestClient, user_id: str) -> list[str]:
    with ctx_of(client).db() as db:
        session = db.scalar(
            select(BrowserSession).where(BrowserSession.user_id == user_id).order_by(BrowserSession.created_at.desc())
        )
        assert session is not None, "no session was started"
        return session.amr


def assert_signed_in(response: httpx.Response) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/account"
    assert any(c.startswith("idp_session=") for c in response.headers.get_list("set-cookie"))


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


# --- the pages ----------------------------------------------------------------------------------


def test_sign_in_page_links_sign_in_with_a_code(site):
    page = site.get("/login")
    link = re.search(r'<a href="([^"]+)">Sign in with a code</a>', page.text)
    assert link and link.group(1) == "/login/code"
    form = site.get(link.group(1))
    assert form.status_code == 200
    assert re.search(r'<input[^>]*name="identifier"', form.text)
    assert hidden_fields(form.text)["csrf_token"]


def test_asking_without_a_csrf_token_is_refused(site):
    site.get("/login/code")
    response = site.post("/login/code", data={"identifier": new_email()})
    assert response.status_code == 400
    assert "expired" in alert_text(response)


def test_entering_a_code_without_a_pending_sign_in_is_an_error_page(site):
    assert site.get("/login/verify").status_code == 400


# --- by email -----------------------------------------------------------------------------------


def test_email_code_signs_in_an_existing_account(site, caplog):
    user = add_user(site, email=new_email())
    response = ask_for_code(site, user.email.upper())
    assert response.status_code == 303
    assert response.headers["location"] == "/login/verify"
    assert "email address" in site.get("/login/verify").text

    assert_signed_in(enter_code(site, emailed_code(site, caplog, user.email)))
    assert signed_in_amr(site, user.id) == ["otp"]
    assert site.get("/account").status_code == 200


def test_first_sign_in_by_email_creates_a_verified_account(site, caplog):
    email = new_email()
    ask_for_code(site, email)
    assert stored_user(site, email=email) is None, "nothing is made before the code comes back"
    assert_signed_in(enter_code(site, emailed_code(site, caplog, email)))
    user = stored_user(site, email=email)
    assert user is not None and user.email_verified and user.password_hash is None
    assert signed_in_amr(site, user.id) == ["otp"]


def test_email_code_verifies_an_unverified_email(site, caplog):
    user = add_user(site, email=new_email(), verified=False)
    ask_for_code(site, user.email)
    assert_signed_in(enter_code(site, emailed_code(site, caplog, user.email)))
    stored = stored_user(site, id=user.id)
    assert stored is not None and stored.email_verified


def test_a_code_on_an_unproven_email_takes_the_account_back_from_whoever_made_it(site, caplog):
    """Pre-account hijacking: someone registers the victim's address with their own password; when
    the victim first proves the address by a code, nothing the stranger set stays."""
    victim = new_email()
    squatter = add_user(site, email=victim, password="squatters own password 1", verified=False)
    with ctx_of(site).db.begin() as db:
        stored = db.get(User, squatter.id)
        stored.mfa_method = "email"
    with ctx_of(site).db.begin() as db:
        start_session(db, db.get(User, squatter.id), amr=["pwd"], ip=None, user_agent=None, lifetime=3600)
    ask_for_code(site, victim)
    assert_signed_in(enter_code(site, emailed_code(site, caplog, victim)))
    reclaimed = stored_user(site, id=squatter.id)
    assert reclaimed is not None and reclaimed.email_verified
    assert reclaimed.password_hash is None, "the stranger's password no longer signs in"
    assert reclaimed.mfa_method is None, "nor does their second factor stand in the owner's way"
    with ctx_of(site).db() as db:
        live = db.scalars(
            select(BrowserSession).where(BrowserSession.user_id == squatter.id, BrowserSession.ended_at.is_(None))
        ).all()
        assert len(live) == 1, "only the owner's new session is live"


def test_a_code_to_a_number_another_account_only_claimed_makes_its_own_account(sms_site, stub):
    number = new_phone()
    claimant = add_user(sms_site, email=new_email(), phone=number, verified=False)
    with ctx_of(sms_site).db.begin() as db:
        db.get(User, claimant.id).email_verified = True
    ask_for_code(sms_site, number)
    assert_signed_in(enter_code(sms_site, texted_code(sms_site, stub, number)))
    owner = stored_user(sms_site, phone=number)
    assert owner is not None and owner.id != claimant.id and owner.phone_verified
    assert stored_user(sms_site, id=claimant.id).phone is None, "the unproven claim is dropped"


# --- by phone, through Twilio -------------------------------------------------------------------


@pytest.mark.parametrize("written", ["e164", "national", "spaced"])
def test_sms_code_through_twilio_signs_in_by_phone(sms_site, stub, written):
    phone = new_phone()
    user = add_user(sms_site, email=new_email(), phone=phone)
    national = "0" + phone[3:]
    typed = {"e164": phone, "national": national, "spaced": f"+98 {phone[3:6]} {phone[6:9]} {phone[9:]}"}[written]
    response = ask_for_code(sms_site, typed)
    assert response.status_code == 303, response.text
    assert "your phone" in sms_site.get("/login/verify").text

    code = texted_code(sms_site, stub, phone)
    assert [m["To"] for m in stub.messages] == [phone]
    assert_signed_in(enter_code(sms_site, code))
    assert signed_in_amr(sms_site, user.id) == ["sms"]


def test_national_number_becomes_e164_with_the_default_region(sms_site, stub):
    ask_for_code(sms_site, "09121234567")
    code = texted_code(sms_site, stub, "+989121234567")
    assert_signed_in(enter_code(sms_site, code))
    user = stored_user(sms_site, phone="+989121234567")
    assert user is not None


def test_a_national_number_and_its_code_in_persian_digits_sign_in(sms_site, stub):
    phone = new_phone()
    user = add_user(sms_site, email=new_email(), phone=phone)
    response = ask_for_code(sms_site, in_persian("0" + phone[3:]))
    assert response.status_code == 303, response.text
    code = texted_code(sms_site, stub, phone)
    assert [m["To"] for m in stub.messages] == [phone]
    assert_signed_in(enter_code(sms_site, in_persian(code)))
    assert signed_in_amr(sms_site, user.id) == ["sms"]


def test_first_sign_in_by_phone_creates_an_account_with_a_verified_phone(sms_site, stub):
    phone = new_phone()
    ask_for_code(sms_site, phone)
    assert_signed_in(enter_code(sms_site, texted_code(sms_site, stub, phone)))
    user = stored_user(sms_site, phone=phone)
    assert user is not None
    assert user.phone_verified and user.email is None and user.password_hash is None
    assert signed_in_amr(sms_site, user.id) == ["sms"]


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("+98 912 12", "That phone number does not exist; check the digits and the country code."),
        ("+1 415 555", "That phone number does not exist; check the digits and the country code."),
        ("call me maybe", "That is not a phone number; write it with its country code, like +14155550100."),
        ("+98" + "9" * 40, "That phone number is too long."),
        ("not@an@address", "That is not an email address."),
    ],
)
def test_invalid_identifier_gets_a_clear_message(site, typed, message):
    response = ask_for_code(site, typed)
    assert response.status_code == 400
    assert alert_text(response) == message
    assert "location" not in response.headers


# --- self-registration off ----------------------------------------------------------------------


def test_without_self_registration_an_unknown_identifier_gets_the_same_answer(closed_site, caplog):
    known = add_user(closed_site, email=new_email())
    unknown = new_email()

    for_known = ask_for_code(closed_site, known.email)
    page_known = closed_site.get("/login/verify")
    for_unknown = ask_for_code(closed_site, unknown)
    page_unknown = closed_site.get("/login/verify")

    assert for_known.status_code == for_unknown.status_code == 303
    assert for_known.headers["location"] == for_unknown.headers["location"]
    assert for_known.text == for_unknown.text
    assert page_known.status_code == page_unknown.status_code == 200
    assert page_known.text == page_unknown.text

    deliver_due(ctx_of(closed_site))
    assert messages_to(closed_site, known.email) == 1
    assert messages_to(closed_site, unknown) == 0, "no message goes to an unknown identifier"
    assert not [r for r in caplog.records if unknown in r.getMessage()]


def test_without_self_registration_no_account_is_made(closed_site):
    unknown = new_email()
    ask_for_code(closed_site, unknown)
    with ctx_of(closed_site).db() as db:
        stored = db.scalar(select(OneTimeCode).where(OneTimeCode.identifier == unknown))
    assert stored is not None
    for guess in ("000000", "123456", "999999"):
        response = enter_code(closed_site, guess)
        assert response.status_code == 400
    assert stored_user(closed_site, email=unknown) is None


def test_without_self_registration_the_resend_limit_answers_alike(closed_site):
    """Refusing a fourth code only to real accounts would tell who has one."""
    known = add_user(closed_site, email=new_email())
    unknown = new_email()
    answers = {}
    for identifier in (known.email, unknown):
        statuses = [ask_for_code(closed_site, identifier).status_code for _ in range(4)]
        answers[identifier] = statuses
        resent = resend(closed_site)
        assert resent.status_code == 429
    assert answers[known.email] == answers[unknown] == [303, 303, 303, 429]


# --- enumeration --------------------------------------------------------------------------------


def test_known_and_unknown_identifiers_get_the_same_status_and_body(site, sms_site):
    known = add_user(site, email=new_email())
    results = []
    for identifier in (known.email, new_email()):
        response = ask_for_code(site, identifier)
        page = site.get("/login/verify")
        results.append((response.status_code, response.headers["location"], response.text, page.status_code, page.text))
    assert results[0] == results[1]

    phone_user = add_user(sms_site, email=new_email(), phone=new_phone())
    phone_results = []
    for identifier in (phone_user.phone, new_phone()):
        response = ask_for_code(sms_site, identifier)
        page = sms_site.get("/login/verify")
        phone_results.append((response.status_code, response.text, page.status_code, page.text))
    assert phone_results[0] == phone_results[1]


# --- wrong codes, spent codes, resending --------------------------------------------------------


def test_wrong_code_shows_an_alert(site, caplog):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    code = emailed_code(site, caplog, user.email)
    response = enter_code(site, wrong(code))
    assert response.status_code == 400
    assert "not right" in alert_text(response)
    assert not any(c.startswith("idp_session=") for c in response.headers.get_list("set-cookie"))
    assert_signed_in(enter_code(site, code))


def test_three_wrong_codes_spend_the_code(site, caplog):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    code = emailed_code(site, caplog, user.email)
    for _ in range(2):
        assert "not right" in alert_text(enter_code(site, wrong(code)))
    third = enter_code(site, wrong(code))
    assert third.status_code == 400 and "one wrong code too many" in third.text
    ended = site.get("/login/verify")
    assert ended.status_code == 400 and "start again" in ended.text, "three wrong codes end the sign-in"
    fields = hidden_fields(site.get("/login/code").text)
    assert site.post("/login/verify", data={**fields, "code": code}).status_code == 400

    caplog.clear()
    ask_for_code(site, user.email)
    assert_signed_in(enter_code(site, emailed_code(site, caplog, user.email)))


@pytest.mark.parametrize("typed", [in_persian, in_arabic_indic])
def test_a_right_code_in_persian_or_arabic_indic_digits_signs_in_after_two_wrong_ones(site, caplog, typed):
    """Typed on a Persian or Arabic keyboard, the right code is right: counted as a wrong one, it
    would be the third and end the sign-in."""
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    code = emailed_code(site, caplog, user.email)
    for _ in range(2):
        assert "not right" in alert_text(enter_code(site, typed(wrong(code))))
    assert_signed_in(enter_code(site, typed(code)))
    assert signed_in_amr(site, user.id) == ["otp"]


def test_the_codes_length_and_tries_are_settings(module_environ, caplog):
    with running_app(module_environ, IDP_OTP_LENGTH="8", IDP_OTP_ATTEMPTS="5") as site:
        user = add_user(site, email=new_email())
        ask_for_code(site, user.email)
        code = emailed_code(site, caplog, user.email)
        assert len(code) == 8
        for _ in range(4):
            assert "not right" in alert_text(enter_code(site, wrong(code)))
        assert_signed_in(enter_code(site, code))

        caplog.clear()
        other = add_user(site, email=new_email())
        ask_for_code(site, other.email)
        code = emailed_code(site, caplog, other.email)
        for _ in range(4):
            assert "not right" in alert_text(enter_code(site, wrong(code)))
        fifth = enter_code(site, wrong(code))
        assert fifth.status_code == 400 and "one wrong code too many" in fifth.text


def test_the_code_page_says_how_many_tries_are_left_and_when_a_new_code_may_go(site, caplog):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    code = emailed_code(site, caplog, user.email)
    page = site.get("/login/verify")
    assert "You have 3 tries left." in page.text and "ask for a new code in" not in page.text
    assert "You have 2 tries left." in enter_code(site, wrong(code)).text
    assert "You have 1 try left." in enter_code(site, wrong(code)).text

    for _ in range(2):
        assert resend(site).status_code == 200
    waiting = site.get("/login/verify").text
    said = re.search(r"You can ask for a new code in (\d+) (second|minute)s?\.", waiting)
    assert said, waiting
    assert 0 < int(said.group(1)) * (60 if said.group(2) == "minute" else 1) <= 120
    assert "You have 1 try left." in waiting, "a new code does not give the sign-in more tries"


def test_a_resent_code_replaces_the_first(site, caplog):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    first = emailed_code(site, caplog, user.email)
    caplog.clear()
    response = resend(site)
    assert response.status_code == 200
    assert "new code" in response.text
    second = emailed_code(site, caplog, user.email)
    if first != second:
        assert enter_code(site, first).status_code == 400
    assert_signed_in(enter_code(site, second))


def test_resend_limit_answers_429_with_the_wait_in_seconds(site):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    assert resend(site).status_code == 200
    assert resend(site).status_code == 200
    response = resend(site)
    assert response.status_code == 429
    wait = re.fullmatch(WAIT, alert_text(response))
    assert wait and 0 < int(wait.group(1)) <= 120
    assert re.search(r'<button type="submit" class="secondary" disabled>', response.text)

    again = ask_for_code(site, user.email)
    assert again.status_code == 429
    assert re.fullmatch(WAIT, alert_text(again))

    with ctx_of(site).db.begin() as db:
        db.execute(
            update(OneTimeCode)
            .where(OneTimeCode.identifier == user.email)
            .values(created_at=OneTimeCode.created_at - 121)
        )
    assert ask_for_code(site, user.email).status_code == 303


def test_an_expired_code_fails(site, caplog):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    code = emailed_code(site, caplog, user.email)
    with ctx_of(site).db.begin() as db:
        db.execute(update(OneTimeCode).where(OneTimeCode.identifier == user.email).values(expires_at=0))
    assert enter_code(site, code).status_code == 400


# --- accounts that may not sign in; audit -------------------------------------------------------


def test_disabled_account_cannot_sign_in_by_code(site, caplog):
    user = add_user(site, email=new_email())
    with ctx_of(site).db.begin() as db:
        disable_user(db, user.id)
    response = ask_for_code(site, user.email)
    assert response.status_code == 303, "the answer does not tell the account is disabled"
    deliver_due(ctx_of(site))
    assert messages_to(site, user.email) == 0, "a disabled account is sent no code"
    for guess in ("000000", "123456"):
        assert enter_code(site, guess).status_code == 400
    with ctx_of(site).db() as db:
        assert db.scalar(select(func.count()).select_from(User).where(User.email == user.email)) == 1
        assert db.scalar(select(func.count()).select_from(BrowserSession).where(BrowserSession.user_id == user.id)) == 0


def test_disabled_after_the_code_was_sent_cannot_sign_in(site, caplog):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    code = emailed_code(site, caplog, user.email)
    with ctx_of(site).db.begin() as db:
        disable_user(db, user.id)
    assert enter_code(site, code).status_code == 400


def test_audit_records_code_sent_and_verified_without_the_code(site, caplog):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    code = emailed_code(site, caplog, user.email)
    enter_code(site, wrong(code))
    assert_signed_in(enter_code(site, code))
    with ctx_of(site).db() as db:
        events = list(db.scalars(select(AuditEvent).where(AuditEvent.user_id == user.id).order_by(AuditEvent.id)))
    seen = [(e.event, e.outcome) for e in events]
    assert seen[:3] == [("code_sent", "success"), ("code_verified", "failure"), ("code_verified", "success")]
    assert ("sign_in", "success") in seen
    for event in events:
        text = json.dumps([event.detail, event.user_agent, event.ip])
        assert code not in text and wrong(code) not in text
    assert events[0].detail == {"channel": "email", "purpose": "sign_in"}
    assert not [r for r in caplog.records if code in r.getMessage() and r.name != "idp.messages"]


def test_a_code_sent_is_recorded_with_the_request_that_asked_for_it(site):
    """The service that sends the code records the event; the request's transaction says whence."""
    user = add_user(site, email=new_email())
    site.headers["user-agent"] = "idp-audit-probe/1.0"
    try:
        assert ask_for_code(site, user.email).status_code == 303
    finally:
        del site.headers["user-agent"]
    with ctx_of(site).db() as db:
        query = select(AuditEvent).where(AuditEvent.user_id == user.id, AuditEvent.event == "code_sent")
        [sent] = db.scalars(query)
    assert (sent.ip, sent.user_agent) == ("testclient", "idp-audit-probe/1.0")


def test_no_code_sent_is_recorded_when_none_went_out(site, caplog):
    """A disabled account's address gets the same page, and a code is made and counted, but none
    leaves: so no ``code_sent`` event claims one did."""
    user = add_user(site, email=new_email())
    with ctx_of(site).db.begin() as db:
        disable_user(db, user.id)
    assert ask_for_code(site, user.email).status_code == 303
    with ctx_of(site).db() as db:
        query = select(AuditEvent).where(AuditEvent.event == "code_sent", AuditEvent.user_id == user.id)
        assert list(db.scalars(query)) == []
    assert not [r for r in caplog.records if user.email in r.getMessage()], "nothing was sent"


def test_audit_records_a_resent_code(site):
    user = add_user(site, email=new_email())
    ask_for_code(site, user.email)
    assert resend(site).status_code == 200
    with ctx_of(site).db() as db:
        query = select(AuditEvent).where(AuditEvent.user_id == user.id, AuditEvent.event == "code_sent")
        sent = list(db.scalars(query.order_by(AuditEvent.id)))
    assert [e.detail for e in sent] == [{"channel": "email", "purpose": "sign_in"}] * 2


# --- inside an authorization request ------------------------------------------------------------


def test_code_sign_in_continues_the_authorization_request(site, caplog):
    app = add_client(site, redirect_uris=["https://rp.example/cb"], first_party=True)
    user = add_user(site, email=new_email(), name="Ada Code")
    verifier, challenge = pkce_pair()
    params = authorize_params(app, challenge)
    response = site.get("/authorize", params=params)
    assert response.status_code == 303
    login = site.get(path_of(response.headers["location"]))
    link = re.search(r'<a href="([^"]+)">Sign in with a code</a>', login.text)
    assert link
    code_page = html.unescape(link.group(1))
    request_id = query_of(code_page)["request"]
    assert urlsplit(code_page).path == "/login/code"

    asked = ask_for_code(site, user.email, request_id=request_id)
    assert asked.status_code == 303
    done = enter_code(site, emailed_code(site, caplog, user.email))
    assert done.status_code == 303
    location = done.headers["location"]
    assert location.startswith(app.redirect_uri + "?")
    callback = query_of(location)
    assert callback["state"] == params["state"]

    tokens = site.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": app.redirect_uri,
            "code_verifier": verifier,
        },
        auth=app.auth,
    )
    assert tokens.status_code == 200, tokens.text
    jwks = jwt.PyJWKSet.from_dict(site.get("/jwks.json").json())
    id_token = tokens.json()["id_token"]
    key = jwks[jwt.get_unverified_header(id_token)["kid"]].key
    claims = jwt.decode(id_token, key, algorithms=["RS256"], audience=app.client_id, issuer=TEST_ISSUER)
    assert claims["sub"] == user.id
    assert claims["amr"] == ["otp"]
    assert claims["nonce"] == params["nonce"]


def test_a_forged_request_id_is_refused(site):
    page = site.get("/login/code")
    response = site.post(
        "/login/code", data={**hidden_fields(page.text), "identifier": new_email(), "request": "forged"}
    )
    assert response.status_code == 400
    assert "location" not in response.headers


# --- the journey in Chromium --------------------------------------------------------------------


@pytest.fixture
def sms_server(module_environ: dict[str, str], stub: Stub, tmp_path: Path) -> Iterator[tuple[str, Context]]:
    """``idp serve`` on this module's database with the Twilio backend pointed at the stub."""
    server_environ = {**module_environ, **twilio_settings(stub)}
    process, url = start_server(server_environ, tmp_path / "serve.log")
    ctx = Context.build(make_settings(server_environ, IDP_ISSUER=url))
    try:
        yield url, ctx
    finally:
        ctx.close()
        process.terminate()
        process.wait(timeout=10)


def test_browser_passwordless_by_sms_from_a_relying_app_to_its_tokens(browser, sms_server, stub):
    url, ctx = sms_server
    with ctx.db.begin() as db:
        made = create_client(db, ctx.secret_key, name="SMS app", redirect_uris=[stub.url + "/cb"], allow_http=True)
        app = RegisteredClient(made.client.id, made.secret, stub.url + "/cb")
        phone = new_phone()
        user_id = create_user(db, email=new_email(), phone=phone, verified=True).id
    verifier, challenge = pkce_pair()
    params = authorize_params(app, challenge, scope="openid phone")

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(f"{url}/authorize?{urlencode(params)}")
        assert urlsplit(page.url).path == "/login"
        with page.expect_navigation():
            page.click("text=Sign in with a code")
        assert urlsplit(page.url).path == "/login/code"
        page.fill("input[name=identifier]", phone)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert urlsplit(page.url).path == "/login/verify"
        assert "your phone" in page.content()

        page.fill("input[name=code]", stub.code_for(phone))
        with page.expect_navigation():
            page.click("form[action='/login/verify'] button[type=submit]")
        assert urlsplit(page.url).path == "/consent"
        page.click("button[name=decision][value=allow]")
        page.wait_for_url(stub.url + "/cb?**")
    finally:
        context.close()

    (reached,) = stub.callbacks
    callback = query_of(reached)
    assert callback["state"] == params["state"] and callback["iss"] == url
    tokens = httpx.post(
        url + "/token",
        data={
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": app.redirect_uri,
            "code_verifier": verifier,
        },
        auth=app.auth,
    )
    assert tokens.status_code == 200, tokens.text
    id_token = tokens.json()["id_token"]
    key = jwt.PyJWKClient(url + "/jwks.json").get_signing_key_from_jwt(id_token).key
    claims = jwt.decode(id_token, key, algorithms=["RS256"], audience=app.client_id, issuer=url)
    assert claims["sub"] == user_id
    assert claims["amr"] == ["sms"]
    assert claims["nonce"] == params["nonce"]
    assert claims["phone_number"] == phone and claims["phone_number_verified"] is True
