"""Registration, email verification and asking for a new link, over HTTP and in Chromium.

Each test gets its own database (on the suite's back end) and an app that mails through real SMTP to an aiosmtpd
sink, so the messages a test reads are exactly the ones it caused. The test clients run without
the app's lifespan, so no background worker races ``deliver_due``: the test decides when mail goes.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
import limits
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import delete, inspect, select, text, update
from starlette.testclient import TestClient

from idp.accounts.users import create_user
from idp.app import create_app
from idp.context import Context
from idp.messaging.worker import deliver_due
from idp.migrate import upgrade
from idp.oauth.clients import create_client
from idp.security.digests import token_digest
from idp.settings import Settings
from idp.storage import ActionToken, AuditEvent, AuthorizationRequest, PasswordHistory, User

from . import test_account
from .conftest import PASSWORD, TEST_ISSUER, ServedApp, free_port, make_settings
from .flows import (
    RegisteredClient,
    authorize_params,
    exchange,
    hidden_fields,
    in_arabic_indic,
    path_of,
    pkce_pair,
    query_of,
    submit_consent,
    submit_login,
)
from .services import SmtpSink, own_database, smtp_sink, text_of
from .test_account import enter_phone_code, sms_code
from .test_browser import RelyingApp

LINK = re.compile(r"(https?://\S+/verify-email\?token=[A-Za-z0-9_\-%]+)")
CSRF_VALUE = re.compile(r'name="csrf_token" value="[^"]*"')
DONE = "Check your email"
MAIL_LIMIT = limits.parse(Settings.rate_limit_verification_address)
"""The default per-address limit on mail, the same for registrations and requests for a link."""

sms_log = test_account.sms_log  # the fixture that reads the text messages sent


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp() -> Iterator[Controller]:
    _, controller = smtp_sink()
    yield controller
    controller.stop()


@pytest.fixture
def sink(smtp: Controller) -> SmtpSink:
    handler: SmtpSink = smtp.handler
    handler.received.clear()
    return handler


@dataclass
class Site:
    ctx: Context
    http: TestClient
    sink: SmtpSink
    environ: dict[str, str]

    def browser(self) -> TestClient:
        """Another browser: its own cookie jar."""
        return TestClient(self.http.app, base_url=TEST_ISSUER, follow_redirects=False)

    def mail(self, to: str) -> list[EmailMessage]:
        """Deliver what is due, then every message the sink holds for ``to``, oldest first."""
        deliver_due(self.ctx)
        return [r.message for r in self.sink.received if to in r.rcpt_tos]

    def links(self, to: str) -> list[str]:
        return [LINK.search(text_of(m)).group(1) for m in self.mail(to) if LINK.search(text_of(m))]  # type: ignore[union-attr]

    def user(self, email: str) -> User | None:
        with self.ctx.db() as db:
            return db.scalar(select(User).where(User.email == email))

    def audit(self, event: str) -> list[AuditEvent]:
        with self.ctx.db() as db:
            return list(db.scalars(select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)))


@pytest.fixture
def make_site(
    base_environ: dict[str, str], settings: Settings, tmp_path: Path, smtp: Controller, sink: SmtpSink
) -> Iterator[Callable[..., Site]]:
    """``make_site(IDP_...=...)``: an app on a fresh database of this site's own (``settings``
    made the signing key they share), with a secret key of its own: the per-address limits count
    under a keyed digest of the address, so a shared Redis keeps each site's counts apart too."""
    made: list[Site] = []
    databases = ExitStack()

    def make(**overrides: str) -> Site:
        directory = tmp_path / f"site{len(made)}"
        directory.mkdir()
        database_url = databases.enter_context(own_database(directory))
        upgrade(database_url)
        environ = {
            **base_environ,
            "IDP_DATABASE_URL": database_url,
            "IDP_SECRET_KEY": f"site-secret-key-{secrets.token_hex(16)}",
            "IDP_EMAIL_BACKEND": "smtp",
            "IDP_SMTP_HOST": "127.0.0.1",
            "IDP_SMTP_PORT": str(smtp.port),
            **overrides,
        }
        app = create_app(make_settings(environ))
        site = Site(app.state.ctx, TestClient(app, base_url=TEST_ISSUER, follow_redirects=False), sink, environ)
        made.append(site)
        return site

    yield make
    for site in made:
        site.ctx.close()
    databases.close()


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    return make_site()


# --- helpers ------------------------------------------------------------------------------------


def register(
    client: TestClient,
    email: str,
    password: str = PASSWORD,
    *,
    confirm: str | None = None,
    request_id: str | None = None,
    **extra: str,
) -> httpx.Response:
    page = client.get("/register" + (f"?{urlencode({'request': request_id})}" if request_id else ""))
    assert page.status_code == 200, page.text
    data = {
        **hidden_fields(page.text),
        "email": email,
        "password": password,
        "password_confirm": password if confirm is None else confirm,
        **extra,
    }
    return client.post("/register", data=data)


def resend(client: TestClient, email: str, request_id: str | None = None) -> httpx.Response:
    page = client.get("/login")
    data = {"csrf_token": hidden_fields(page.text)["csrf_token"], "email": email}
    if request_id:
        data["request"] = request_id
    return client.post("/verify-email/resend", data=data)


def alert(html: str) -> str:
    found = re.search(r'role="alert">([^<]*)<', html)
    assert found, html
    return found.group(1).replace("&#39;", "'")


def same_page(html: str, *typed: str) -> str:
    """The page without what legitimately differs: the CSRF token and what the person typed."""
    html = CSRF_VALUE.sub('name="csrf_token" value=""', html)
    for value in typed:
        html = html.replace(value, "<typed>")
    return html


def database_text(ctx: Context) -> str:
    """Every value of every row of every table, as text."""
    values: list[str] = []
    with ctx.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                values.extend(str(value) for value in row)
    return "\n".join(values)


def start_authorization(client: TestClient, rp: RegisteredClient) -> tuple[str, str, dict[str, str]]:
    """The pending request id, the PKCE verifier and the parameters of a new authorization."""
    verifier, challenge = pkce_pair()
    params = authorize_params(rp, challenge)
    response = client.get("/authorize", params=params)
    assert response.status_code == 303
    location = response.headers["location"]
    assert urlsplit(location).path == "/login"
    return query_of(location)["request"], verifier, params


def register_and_verify(site: Site, email: str, **extra: str) -> TestClient:
    """A browser that registered ``email`` and followed the link, signed in and on ``/account``."""
    browser = site.browser()
    assert register(browser, email, **extra).status_code == 200
    (link,) = site.links(email)
    assert browser.get(path_of(link)).headers["location"] == "/account"
    return browser


def waits_for_code(browser: TestClient, phone: str) -> bool:
    """``/account`` offers to enter the code sent to ``phone``, which is not yet the person's."""
    return f'Enter the code sent to <bdi dir="ltr">{phone}</bdi>' in browser.get("/account").text


def make_rp(ctx: Context, redirect_uri: str = "https://rp.example/cb") -> RegisteredClient:
    with ctx.db.begin() as db:
        made = create_client(db, ctx.secret_key, name="Relying app", redirect_uris=[redirect_uri], allow_http=True)
        return RegisteredClient(made.client.id, made.secret, redirect_uri)


# --- the page -----------------------------------------------------------------------------------


def test_register_page_has_the_contract_fields(site: Site) -> None:
    page = site.http.get("/register")
    assert page.status_code == 200
    for field in ("email", "password", "password_confirm", "name", "given_name", "family_name", "phone"):
        assert f'name="{field}"' in page.text
    assert "csrf_token" in hidden_fields(page.text)
    assert page.headers["cache-control"] == "no-store"


def test_sign_in_page_links_to_registration_with_the_pending_request(site: Site) -> None:
    request_id, _, _ = start_authorization(site.http, make_rp(site.ctx))
    page = site.http.get(f"/login?request={request_id}")
    assert f'href="/register?request={request_id}"' in page.text
    form = site.http.get(f"/register?request={request_id}")
    assert hidden_fields(form.text)["request"] == request_id
    assert "Relying app" in form.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"email": "not-an-email"}, "Enter your email address, like name@example.com."),
        ({"email": ""}, "Enter your email address, like name@example.com."),
        ({"confirm": "another long password"}, "The two passwords are not the same."),
        ({"phone": "12"}, "That is not a phone number"),
        ({"phone": "+1 555 000"}, "That phone number does not exist"),
        ({"name": "x" * 201}, "The name can have at most 200 characters."),
        ({"password": "short"}, "Use at least 8 characters."),
        ({"password": "password1"}, "This password is too common."),
    ],
)
def test_every_validation_error_shows_inline_and_keeps_what_was_typed(
    site: Site, overrides: dict[str, str], message: str
) -> None:
    fields = {"email": "ann@example.com", "name": "Ann Example", "phone": "+14155550100", **overrides}
    password = fields.pop("password", PASSWORD)
    confirm = fields.pop("confirm", None)
    response = register(site.http, fields.pop("email"), password, confirm=confirm, **fields)
    assert response.status_code == 400
    assert alert(response.text).startswith(message), alert(response.text)
    if "@" in overrides.get("email", "ann@example.com"):
        assert 'value="ann@example.com"' in response.text
    if "name" not in overrides:
        assert 'value="Ann Example"' in response.text
    if "phone" not in overrides:
        assert 'value="+14155550100"' in response.text
    assert password not in response.text, "passwords are never sent back"
    assert site.user("ann@example.com") is None
    assert site.mail("ann@example.com") == []


@pytest.mark.parametrize("typed", ["09121234567", in_arabic_indic("09121234567")])
def test_a_national_phone_number_gets_its_code_as_ascii_e164(
    make_site: Callable[..., Site], sms_log: pytest.LogCaptureFixture, typed: str
) -> None:
    site = make_site(IDP_PHONE_DEFAULT_REGION="IR")
    browser = register_and_verify(site, "ann@example.com", phone=typed)
    assert sms_code(site.ctx, sms_log, "+989121234567")
    assert waits_for_code(browser, "+989121234567")


def test_csrf_missing_is_400_and_makes_nothing(site: Site) -> None:
    response = site.http.post(
        "/register", data={"email": "ann@example.com", "password": PASSWORD, "password_confirm": PASSWORD}
    )
    assert response.status_code == 400
    assert alert(response.text) == "This form has expired. Please try again."
    assert site.user("ann@example.com") is None
    site.http.get("/login")
    assert site.http.post("/verify-email/resend", data={"email": "ann@example.com"}).status_code == 400


def test_self_registration_off_hides_the_page_and_the_link(make_site: Callable[..., Site]) -> None:
    site = make_site(IDP_SELF_REGISTRATION="off")
    assert site.http.get("/register").status_code == 404
    fields = hidden_fields(site.http.get("/login").text)
    response = site.http.post(
        "/register", data={**fields, "email": "ann@example.com", "password": PASSWORD, "password_confirm": PASSWORD}
    )
    assert response.status_code == 404
    assert site.user("ann@example.com") is None
    assert "/register" not in site.http.get("/login").text


# --- registering --------------------------------------------------------------------------------


def test_registration_makes_an_unverified_account_and_mails_a_link(site: Site) -> None:
    response = register(site.http, "Ann@Example.com", name="Ann Example", phone="+14155550100")
    assert response.status_code == 200
    assert DONE in response.text and "ann@example.com" in response.text
    assert 'action="/verify-email/resend"' in response.text
    cookie = response.headers["set-cookie"]
    assert "idp_registration=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")

    user = site.user("ann@example.com")
    assert user is not None
    assert not user.email_verified and user.name == "Ann Example" and user.phone is None
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")

    (message,) = site.mail("ann@example.com")
    assert message["Subject"] == "Verify your email address · idp"
    (link,) = site.links("ann@example.com")
    assert link.startswith(f"{TEST_ISSUER}/verify-email?token=")
    assert message.get_body(("html",)) is not None

    token = query_of(link)["token"]
    with site.ctx.db() as db:
        stored = db.get(ActionToken, token_digest(token))
        assert stored is not None and stored.purpose == "verify_email" and stored.user_id == user.id
        assert stored.expires_at == user.created_at + 24 * 3600
        assert stored.authorization_request_id is None and stored.browser_hash
        assert stored.phone == "+14155550100", "the number waits for the address to be verified"
    assert token not in database_text(site.ctx), "the raw token is stored nowhere"
    assert PASSWORD not in database_text(site.ctx)


def test_password_sign_in_waits_for_verification_and_offers_a_new_link(site: Site) -> None:
    register(site.http, "ann@example.com")
    other = site.browser()
    response = submit_login(other, "/login", "ann@example.com", PASSWORD)
    assert response.status_code == 400
    assert alert(response.text) == "Verify your email address first: follow the link in the email we sent you."
    assert 'action="/verify-email/resend"' in response.text
    assert 'id="resend-email" name="email" type="email" autocomplete="email" value="ann@example.com"' in response.text

    fields = {k: v for k, v in hidden_fields(response.text).items() if k != "request"}
    resent = other.post("/verify-email/resend", data={**fields, "email": "ann@example.com"})
    assert resent.status_code == 200
    assert len(site.links("ann@example.com")) == 2


def test_a_taken_email_gets_the_same_answer_and_its_owner_a_notice(site: Site) -> None:
    register(site.browser(), "owner@example.com", name="Owner")
    owner_before = site.user("owner@example.com")
    assert owner_before is not None

    fresh, taken = site.browser(), site.browser()
    new = register(fresh, "newcomer@example.com", "another good passphrase", name="Mallory")
    again = register(taken, "owner@example.com", "another good passphrase", name="Mallory")
    assert again.status_code == new.status_code == 200
    assert same_page(again.text, "owner@example.com") == same_page(new.text, "newcomer@example.com")
    assert set(again.cookies.keys()) == set(new.cookies.keys()) == {"idp_registration"}

    owner = site.user("owner@example.com")
    assert owner is not None
    assert (owner.id, owner.name, owner.password_hash, owner.updated_at) == (
        owner_before.id,
        owner_before.name,
        owner_before.password_hash,
        owner_before.updated_at,
    )
    with site.ctx.db() as db:
        assert len(list(db.scalars(select(User)))) == 2
        assert len(list(db.scalars(select(PasswordHistory).where(PasswordHistory.user_id == owner.id)))) == 1

    messages = site.mail("owner@example.com")
    assert [m["Subject"] for m in messages] == [
        "Verify your email address · idp",
        "Someone tried to register with your email address · idp",
    ]
    notice = text_of(messages[-1])
    assert f"{TEST_ISSUER}/login" in notice and f"{TEST_ISSUER}/password/forgot" in notice
    assert "verify-email" not in notice
    (event,) = [e for e in site.audit("registration") if e.outcome == "failure"]
    assert event.user_id == owner.id and event.detail and event.detail["account"] == "existing"


def test_a_taken_email_is_refused_by_the_same_password_rules(site: Site) -> None:
    register(site.browser(), "owner@example.com")
    weak_new = register(site.browser(), "newcomer@example.com", "password1")
    weak_taken = register(site.browser(), "owner@example.com", "password1")
    assert weak_new.status_code == weak_taken.status_code == 400
    assert alert(weak_new.text) == alert(weak_taken.text)
    assert len(site.mail("owner@example.com")) == 1, "no notice for a refused form"


def test_notices_to_a_taken_email_are_limited(site: Site) -> None:
    """Even with rate limiting off, and counted by the rate limiter, not from the audit log."""
    assert not site.ctx.settings.rate_limiting
    register(site.browser(), "owner@example.com")
    with site.ctx.db.begin() as db:
        db.execute(delete(AuditEvent))
    for _ in range(5):
        assert register(site.browser(), "owner@example.com", "another good passphrase").status_code == 200
    # The verification link and the notices together: at most the limit in its window.
    assert len(site.mail("owner@example.com")) == MAIL_LIMIT.amount


def test_a_phone_number_someone_has_looks_to_the_registrant_like_a_free_one(
    site: Site, sms_log: pytest.LogCaptureFixture
) -> None:
    """The number typed at registration becomes the person's only by the code sent to it once the
    address is verified, as on ``/account``: were a free number kept on the account and a taken
    one left off, whoever registers would learn from their own account whether someone has it."""
    taken, free = "+14155550100", "+14155550101"
    with site.ctx.db.begin() as db:
        create_user(db, email="owner@example.com", phone=taken, verified=True)
    probes = {"first@example.com": free, "second@example.com": taken}
    browsers = {email: register_and_verify(site, email, phone=phone) for email, phone in probes.items()}
    pages = {email: browser.get("/account").text for email, browser in browsers.items()}
    profiles = {
        same_page(page[: page.index("sessions-heading")], email, probes[email]) for email, page in pages.items()
    }
    assert len(profiles) == 1, "the profile shows the same whether someone has the number or not"
    for email, phone in probes.items():
        assert waits_for_code(browsers[email], phone) and sms_code(site.ctx, sms_log, phone)
        user = site.user(email)
        assert user is not None and user.phone is None and not user.phone_verified
    owner = site.user("owner@example.com")
    assert owner is not None and owner.phone == taken and owner.phone_verified


def test_a_phone_number_given_at_registration_is_the_persons_once_its_code_is_entered(
    site: Site, sms_log: pytest.LogCaptureFixture
) -> None:
    browser = register_and_verify(site, "ann@example.com", phone="+14155550100")
    assert enter_phone_code(browser, sms_code(site.ctx, sms_log, "+14155550100")).status_code == 303
    user = site.user("ann@example.com")
    assert user is not None and user.phone == "+14155550100" and user.phone_verified


def test_a_link_to_a_changed_address_carries_no_number_given_before(site: Site) -> None:
    """An account whose address an operator changed while it waited: a new link for the new
    address leads to no code for the number the registration gave for the old one."""
    browser = site.browser()
    assert register(browser, "ann@example.com", phone="+14155550100").status_code == 200
    with site.ctx.db.begin() as db:
        user = db.scalar(select(User).where(User.email == "ann@example.com"))
        assert user is not None
        user.email = "ann.new@example.com"
    assert resend(site.browser(), "ann.new@example.com").status_code == 200
    (link,) = site.links("ann.new@example.com")
    assert browser.get(path_of(link)).headers["location"] == "/account"
    assert not waits_for_code(browser, "+14155550100")


# --- verifying ----------------------------------------------------------------------------------


def test_the_link_in_the_registering_browser_signs_in(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    response = site.http.get(path_of(link))
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert "idp_session=" in response.headers["set-cookie"]
    assert site.http.get("/account").status_code == 200
    user = site.user("ann@example.com")
    assert user is not None and user.email_verified
    (event,) = site.audit("email_verified")
    assert event.outcome == "success" and event.user_id == user.id and event.detail == {"signed_in": True}


def verify_elsewhere(client: TestClient, link: str, password: str = PASSWORD) -> httpx.Response:
    """Open the link in a browser that did not register, and give the password it asks for."""
    form = client.get(path_of(link))
    assert form.status_code == 200 and 'name="password"' in form.text, form.text
    return client.post("/verify-email", data={**hidden_fields(form.text), "password": password})


def test_the_link_in_another_browser_verifies_without_signing_in(site: Site) -> None:
    request_id, _, _ = start_authorization(site.http, make_rp(site.ctx))
    register(site.http, "ann@example.com", request_id=request_id)
    (link,) = site.links("ann@example.com")
    other = site.browser()
    response = verify_elsewhere(other, link)
    assert response.status_code == 200
    assert "Your email is verified" in response.text
    assert f'href="/login?request={request_id}"' in response.text
    assert "idp_session" not in response.headers.get("set-cookie", "")
    assert other.get("/account").status_code == 303
    user = site.user("ann@example.com")
    assert user is not None and user.email_verified
    assert site.audit("email_verified")[0].detail == {"signed_in": False}
    assert submit_login(other, f"/login?request={request_id}", "ann@example.com", PASSWORD).status_code == 303


def test_the_link_works_once(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    assert site.http.get(path_of(link)).status_code == 303
    again = site.http.get(path_of(link))
    assert again.status_code == 400
    assert "already used, it expired" in alert(again.text)
    assert "idp_session" not in again.headers.get("set-cookie", "")
    assert [e.outcome for e in site.audit("email_verified")] == ["success", "failure"]


def test_an_expired_link_is_refused(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    with site.ctx.db.begin() as db:
        db.execute(update(ActionToken).values(expires_at=ActionToken.created_at - 1))
    response = site.http.get(path_of(link))
    assert response.status_code == 400 and "expired" in alert(response.text)
    user = site.user("ann@example.com")
    assert user is not None and not user.email_verified


@pytest.mark.parametrize("query", ["", "?token=", "?token=unknown-token", "?token=" + "x" * 500])
def test_an_unknown_link_is_refused(site: Site, query: str) -> None:
    response = site.http.get("/verify-email" + query)
    assert response.status_code == 400 and "not valid" in alert(response.text)


def test_names_given_at_registration_are_kept_and_go_out_as_claims(site: Site) -> None:
    rp = make_rp(site.ctx)
    request_id, verifier, _ = start_authorization(site.http, rp)
    names = {"name": "Ann Example", "given_name": " Ann ", "family_name": "Example"}
    assert register(site.http, "ann@example.com", request_id=request_id, **names).status_code == 200
    user = site.user("ann@example.com")
    assert user is not None and (user.name, user.given_name, user.family_name) == ("Ann Example", "Ann", "Example")

    (link,) = site.links("ann@example.com")
    response = submit_consent(site.http, site.http.get(path_of(link)).headers["location"])
    tokens = exchange(site.http, rp, query_of(response.headers["location"])["code"], verifier)
    claims = jwt.decode(tokens.json()["id_token"], options={"verify_signature": False})
    assert (claims["name"], claims["given_name"], claims["family_name"]) == ("Ann Example", "Ann", "Example")


def test_a_given_name_with_control_characters_is_refused_at_registration(site: Site) -> None:
    response = register(site.http, "ann@example.com", given_name="Ann\u202e")
    assert response.status_code == 400 and "control characters" in alert(response.text)
    assert site.user("ann@example.com") is None


def test_a_head_request_does_not_spend_the_link(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    assert site.http.head(path_of(link)).status_code == 200
    assert site.http.get(path_of(link)).status_code == 303


def test_verification_continues_the_authorization_request(site: Site) -> None:
    rp = make_rp(site.ctx)
    request_id, verifier, params = start_authorization(site.http, rp)
    assert register(site.http, "ann@example.com", request_id=request_id).status_code == 200
    (link,) = site.links("ann@example.com")
    with site.ctx.db() as db:
        assert db.scalars(select(ActionToken.authorization_request_id)).one() == request_id

    response = site.http.get(path_of(link))
    assert response.status_code == 303
    assert response.headers["location"] == f"/consent?request={request_id}"
    response = submit_consent(site.http, response.headers["location"])
    callback = query_of(response.headers["location"])
    assert response.headers["location"].startswith(rp.redirect_uri)
    assert callback["state"] == params["state"]
    tokens = exchange(site.http, rp, callback["code"], verifier)
    assert tokens.status_code == 200
    claims = jwt.decode(tokens.json()["id_token"], options={"verify_signature": False})
    user = site.user("ann@example.com")
    assert user is not None
    assert claims["sub"] == user.id and claims["email"] == "ann@example.com" and claims["email_verified"] is True
    assert claims["amr"] == ["pwd"]


def test_an_expired_authorization_request_lands_on_the_account_page(site: Site) -> None:
    request_id, _, _ = start_authorization(site.http, make_rp(site.ctx))
    register(site.http, "ann@example.com", request_id=request_id)
    with site.ctx.db.begin() as db:
        db.execute(update(AuthorizationRequest).values(expires_at=0))
    (link,) = site.links("ann@example.com")
    response = site.http.get(path_of(link))
    assert response.status_code == 303 and response.headers["location"] == "/account"


def test_a_person_with_a_second_factor_is_asked_for_it(site: Site) -> None:
    register(site.http, "ann@example.com")
    with site.ctx.db.begin() as db:
        db.execute(update(User).values(mfa_method="email"))
    (link,) = site.links("ann@example.com")
    response = site.http.get(path_of(link))
    assert response.status_code == 303 and response.headers["location"] == "/login/verify"
    assert "idp_session=" not in response.headers["set-cookie"]


# --- asking for a new link ----------------------------------------------------------------------


def test_a_new_link_replaces_the_old_one(site: Site) -> None:
    register(site.http, "ann@example.com")
    response = resend(site.http, "ann@example.com")
    assert response.status_code == 200
    assert "we sent it a new link" in response.text
    first, second = site.links("ann@example.com")
    assert first != second
    assert site.http.get(path_of(first)).status_code == 400
    assert site.http.get(path_of(second)).status_code == 303
    with site.ctx.db() as db:
        assert all(used is not None for used in db.scalars(select(ActionToken.used_at)))


def test_a_new_link_continues_what_the_registering_browser_started(
    site: Site, sms_log: pytest.LogCaptureFixture
) -> None:
    request_id, _, _ = start_authorization(site.http, make_rp(site.ctx))
    done = register(site.http, "ann@example.com", request_id=request_id, phone="+14155550100")
    resent = site.http.post("/verify-email/resend", data={**hidden_fields(done.text), "email": "ann@example.com"})
    assert resent.status_code == 200
    _, link = site.links("ann@example.com")
    response = site.http.get(path_of(link))
    assert response.status_code == 303 and response.headers["location"] == f"/consent?request={request_id}"
    assert sms_code(site.ctx, sms_log, "+14155550100"), "and the number given gets its code"


def test_a_stranger_asking_for_a_new_link_cannot_put_their_request_in_it(site: Site) -> None:
    """Anyone may ask for a new link for any address, and the new one is the only one that works:
    were the request they name carried in it, the registering browser following it would sign in
    and continue the stranger's request (their PKCE challenge, state and nonce), its code for the
    person who registered."""
    victim = site.browser()
    own_request, _, _ = start_authorization(victim, make_rp(site.ctx))
    register(victim, "victim@example.com", request_id=own_request)
    stranger = site.browser()
    stranger_request, _, _ = start_authorization(stranger, make_rp(site.ctx, "https://spa.example/cb"))
    assert resend(stranger, "victim@example.com", stranger_request).status_code == 200

    _, link = site.links("victim@example.com")
    response = victim.get(path_of(link))
    assert response.status_code == 303 and response.headers["location"] == f"/consent?request={own_request}"
    with site.ctx.db() as db:
        assert set(db.scalars(select(ActionToken.authorization_request_id))) == {own_request}


def test_asking_for_a_link_answers_the_same_for_every_address(site: Site) -> None:
    register(site.browser(), "waiting@example.com")
    registering = site.browser()
    register(registering, "verified@example.com")
    (verified_link,) = site.links("verified@example.com")
    assert registering.get(path_of(verified_link)).status_code == 303

    answers = {
        email: resend(site.browser(), email)
        for email in ("waiting@example.com", "verified@example.com", "nobody@example.com")
    }
    assert {r.status_code for r in answers.values()} == {200}
    assert len({same_page(r.text, email) for email, r in answers.items()}) == 1
    assert len(site.links("waiting@example.com")) == 2
    assert len(site.mail("verified@example.com")) == 1
    assert site.mail("nobody@example.com") == []


def test_asking_for_links_is_limited_alike_for_every_address(site: Site) -> None:
    """Even with rate limiting off, and counted by the rate limiter, not from the audit log."""
    assert not site.ctx.settings.rate_limiting
    register(site.http, "waiting@example.com")
    for email in ("waiting@example.com", "nobody@example.com"):
        for _ in range(MAIL_LIMIT.amount):
            assert resend(site.http, email).status_code == 200
    with site.ctx.db.begin() as db:
        db.execute(delete(AuditEvent))
    limited = {email: resend(site.http, email) for email in ("waiting@example.com", "nobody@example.com")}
    for response in limited.values():
        assert response.status_code == 429
        wait = re.search(r"You can ask again in (\d+) seconds\.", alert(response.text))
        assert wait and 0 < int(wait.group(1)) <= MAIL_LIMIT.get_expiry()
    assert len({same_page(re.sub(r"\d+ seconds", "N seconds", r.text), email) for email, r in limited.items()}) == 1
    assert len(site.links("waiting@example.com")) == 1 + MAIL_LIMIT.amount


def test_refused_requests_for_a_link_do_not_push_the_wait_further_out(make_site: Callable[..., Site]) -> None:
    window = 2
    site = make_site(IDP_RATE_LIMIT_VERIFICATION_ADDRESS=f"1 per {window} seconds")
    assert resend(site.http, "waiting@example.com").status_code == 200
    counted = time.monotonic()
    while time.monotonic() < counted + window - 0.5:
        assert resend(site.http, "waiting@example.com").status_code == 429
        time.sleep(0.2)
    time.sleep(max(0.0, counted + window + 0.2 - time.monotonic()))
    assert resend(site.http, "waiting@example.com").status_code == 200


def test_asking_for_a_link_with_no_email_address_says_so(site: Site) -> None:
    response = resend(site.http, "not-an-email")
    assert response.status_code == 400 and alert(response.text) == "That is not an email address."


# --- the audit ----------------------------------------------------------------------------------


def test_audit_events_exist_and_hold_no_secret(site: Site) -> None:
    register(site.http, "ann@example.com", name="Ann", phone="+14155550100")
    resend(site.http, "ann@example.com")
    resend(site.http, "nobody@example.com")
    _, link = site.links("ann@example.com")
    site.http.get(path_of(link))
    site.http.get("/verify-email?token=wrong")

    (registered,) = site.audit("registration")
    user = site.user("ann@example.com")
    assert user is not None
    assert registered.outcome == "success" and registered.user_id == user.id
    assert registered.detail is not None
    assert registered.detail["account"] == "new" and registered.detail["recipient"] == "a***@example.com"
    assert [(e.outcome, e.user_id) for e in site.audit("verification_resent")] == [
        ("success", user.id),
        ("success", None),
    ]
    assert [e.outcome for e in site.audit("email_verified")] == ["success", "failure"]
    assert registered.ip and registered.user_agent

    with site.ctx.db() as db:
        events = " ".join(f"{e.detail} {e.user_agent}" for e in db.scalars(select(AuditEvent)))
    token = query_of(link)["token"]
    for secret in (PASSWORD, token, token_digest(token), "ann@example.com", "+14155550100"):
        assert secret not in events


# --- the whole journey in Chromium --------------------------------------------------------------


def wait_for_link(sink: SmtpSink, to: str, timeout: float = 15) -> str:
    """The background worker of the served app delivers the message; wait for it at the sink."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received in sink.received:
            found = to in received.rcpt_tos and LINK.search(text_of(received.message))
            if found:
                return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no verification email reached {to}")


def test_browser_register_verify_and_return_to_the_app(
    browser: Any, make_site: Callable[..., Site], sink: SmtpSink
) -> None:
    port = free_port()
    site = make_site(IDP_ISSUER=f"http://127.0.0.1:{port}")
    relying_app = RelyingApp()
    threading.Thread(target=relying_app.serve_forever, daemon=True).start()
    rp = make_rp(site.ctx, relying_app.origin + "/cb")
    context = browser.new_context()
    try:
        with ServedApp(site.http.app, port) as served:
            page = context.new_page()
            page.set_default_timeout(15_000)
            verifier, challenge = pkce_pair()
            params = authorize_params(rp, challenge)
            page.goto(f"{served.url}/authorize?{urlencode(params)}")
            assert urlsplit(page.url).path == "/login"

            with page.expect_navigation():
                page.click("text=Create an account")
            assert urlsplit(page.url).path == "/register"
            page.fill("input[name=email]", "grace@example.com")
            page.fill("input[name=password]", PASSWORD)
            page.fill("input[name=password_confirm]", PASSWORD)
            page.fill("input[name=name]", "Grace Hopper")
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert page.locator("h1").inner_text() == DONE

            link = wait_for_link(sink, "grace@example.com")
            assert link.startswith(f"{served.url}/verify-email?token=")
            page.goto(link)
            assert urlsplit(page.url).path == "/consent", page.url
            page.click("button[name=decision][value=allow]")
            page.wait_for_url(relying_app.origin + "/**")
            callback = relying_app.callbacks[-1].params
            assert callback["state"] == params["state"]

            response = httpx.post(
                served.url + "/token",
                data={
                    "grant_type": "authorization_code",
                    "code": callback["code"],
                    "redirect_uri": rp.redirect_uri,
                    "code_verifier": verifier,
                },
                auth=rp.auth,
            )
            assert response.status_code == 200, response.text
            id_token = response.json()["id_token"]
            key = jwt.PyJWKClient(served.url + "/jwks.json").get_signing_key_from_jwt(id_token).key
            claims = jwt.decode(id_token, key, algorithms=["RS256"], audience=rp.client_id, issuer=served.url)
    finally:
        context.close()
        relying_app.shutdown()
        relying_app.server_close()
    user = site.user("grace@example.com")
    assert user is not None and user.email_verified
    assert claims["sub"] == user.id and claims["email_verified"] is True and claims["name"] == "Grace Hopper"
    assert claims["nonce"] == params["nonce"]
