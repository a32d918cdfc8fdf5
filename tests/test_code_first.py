"""Code-first sign-in: password sign-in turned off (``IDP_PASSWORD_SIGN_IN=off``), a client whose
sign-in leads with the code page (``--sign-in code``), and its ``login_hint`` sent a code at once,
once per authorization request, under the code page's own limits.

Every app here runs on this module's own database (``module_environ``), so that the outbox rows
counted are the ones these tests queued; each test that counts per-address limits comes from an
address of its own.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.users import create_user
from idp.oauth.clients import create_client
from idp.storage import User

from .flows import (
    RegisteredClient,
    alert_text,
    ask_for_code,
    authorize_params,
    ctx_of,
    emailed_code,
    enter_code,
    exchange,
    hidden_fields,
    in_persian,
    messages_to,
    path_of,
    pkce_pair,
    query_of,
)
from .services import running_app
from .test_cli import assert_refused, clients, env, ok, run_idp  # noqa: F401 - env is a fixture
from .test_rate_limits import new_address

PASSWORD = "a long and right passphrase"
CHALLENGE_PATH = "/authorize-challenge"
OFF_SENTENCE = "Signing in with a password is turned off. Sign in with a code sent to your email or phone."
WAIT = r"Too many codes were sent\. You can ask for a new one in (\d+) seconds\."
_CSRF = re.compile(r'name="csrf_token" value="[^"]*"')


@pytest.fixture(autouse=True)
def _messages_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="idp.messages")


@pytest.fixture
def site(module_environ: dict[str, str]) -> Iterator[TestClient]:
    """Password sign-in on, as by default."""
    with running_app(module_environ, peer=new_address(), IDP_PHONE_DEFAULT_REGION="IR") as client:
        yield client


@pytest.fixture
def codes_only(module_environ: dict[str, str]) -> Iterator[TestClient]:
    """Password sign-in off."""
    with running_app(module_environ, peer=new_address(), IDP_PASSWORD_SIGN_IN="off") as client:
        yield client


def add_client(site: TestClient, *, sign_in: str = "password", first_party: bool = True) -> RegisteredClient:
    ctx = ctx_of(site)
    with ctx.db.begin() as db:
        made = create_client(
            db,
            ctx.secret_key,
            name="Phone-first app",
            redirect_uris=["https://app.example/cb"],
            first_party=first_party,
            sign_in=sign_in,
            allow_http=True,
        )
        return RegisteredClient(made.client.id, made.secret, made.client.redirect_uris[0])


def add_user(site: TestClient, **kwargs: Any) -> User:
    kwargs.setdefault("verified", True)
    with ctx_of(site).db.begin() as db:
        user = create_user(db, **kwargs)
        db.expunge(user)
        return user


def new_email() -> str:
    return f"cf-{secrets.token_hex(5)}@example.com"


def new_phone() -> str:
    return f"+98912{secrets.randbelow(10**7):07d}"


def authorize(site: TestClient, app: RegisteredClient, **overrides: str) -> tuple[str, str]:
    """Start an authorization request; where it sends the browser, and the PKCE verifier."""
    verifier, challenge = pkce_pair()
    response = site.get("/authorize", params=authorize_params(app, challenge, **overrides))
    assert response.status_code == 303, response.text
    return response.headers["location"], verifier


def field_value(html: str, name: str) -> str | None:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html)
    return found.group(1) if found else None


def without_csrf(text: str) -> str:
    return _CSRF.sub("", text)


# --- password sign-in off -------------------------------------------------------------------------


def test_with_password_sign_in_off_the_sign_in_page_asks_only_for_a_code(codes_only):
    page = codes_only.get("/login")
    assert page.status_code == 200
    assert 'name="password"' not in page.text
    assert 'name="identifier"' in page.text and 'action="/login/code' in page.text
    assert "/password/forgot" not in page.text
    assert "Sign in with a password instead" not in page.text


def test_with_password_sign_in_off_a_posted_password_is_refused_on_the_page(codes_only):
    user = add_user(codes_only, email=new_email(), password=PASSWORD)
    fields = hidden_fields(codes_only.get("/login").text)
    response = codes_only.post("/login", data={**fields, "username": user.email, "password": PASSWORD})
    assert response.status_code == 400
    assert alert_text(response) == OFF_SENTENCE
    assert not any(c.startswith("idp_session=") for c in response.headers.get_list("set-cookie"))
    assert field_value(response.text, "identifier") == user.email


def test_with_password_sign_in_off_the_challenge_endpoint_refuses_a_password(codes_only):
    user = add_user(codes_only, email=new_email(), password=PASSWORD)
    app = add_client(codes_only)
    _, challenge = pkce_pair()
    first = codes_only.post(
        CHALLENGE_PATH,
        data={
            "client_id": app.client_id,
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "login_hint": user.email,
        },
        auth=app.auth,
    )
    assert first.status_code == 403, first.text
    refused = codes_only.post(
        CHALLENGE_PATH, data={"auth_session": first.json()["auth_session"], "password": PASSWORD}, auth=app.auth
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_request"
    assert "password sign-in is turned off" in refused.json()["error_description"]


def test_with_password_sign_in_off_registering_is_a_first_sign_in_by_code_without_a_password(codes_only, caplog):
    app = add_client(codes_only)
    location, verifier = authorize(codes_only, app)
    assert path_of(location).startswith("/login/code?request="), location
    request_id = query_of(location)["request"]
    register = codes_only.get("/register", params={"request": request_id})
    assert register.status_code == 303
    assert register.headers["location"] == f"/login/code?request={request_id}"

    email = new_email()
    assert ask_for_code(codes_only, email, request_id).headers["location"] == "/login/verify"
    back = enter_code(codes_only, emailed_code(codes_only, caplog, email))
    assert back.status_code == 303 and back.headers["location"].startswith(app.redirect_uri), back.text
    tokens = exchange(codes_only, app, query_of(back.headers["location"])["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    assert {"id_token", "access_token", "refresh_token"} <= set(tokens.json())
    with ctx_of(codes_only).db() as db:
        user = db.scalar(select(User).where(User.email == email))
        assert user is not None and user.password_hash is None and user.email_verified


def test_with_password_sign_in_off_a_passwordless_account_is_not_offered_a_password(codes_only, caplog):
    email = new_email()
    ask_for_code(codes_only, email)
    assert enter_code(codes_only, emailed_code(codes_only, caplog, email)).headers["location"] == "/account"
    page = codes_only.get("/account")
    assert page.status_code == 200
    assert "Set a password" not in page.text and "/account/password/set/code" not in page.text
    refused = codes_only.post("/account/password/set/code", data=hidden_fields(page.text))
    assert refused.status_code == 400, refused.text  # a crafted post: the page has no form to show it by
    assert messages_to(codes_only, email) == 1, "no code to set a password went out"


# --- a code-first client --------------------------------------------------------------------------


def test_a_code_first_client_leads_with_the_code_page_and_others_with_the_password_page(site):
    location, _ = authorize(site, add_client(site, sign_in="code"))
    assert path_of(location).startswith("/login/code?request=")
    page = site.get(path_of(location))
    assert page.status_code == 200 and 'name="identifier"' in page.text
    assert "Sign in with a password instead" in page.text

    location, _ = authorize(site, add_client(site))
    assert path_of(location).startswith("/login?request=")


def test_login_hint_prefills_the_password_page_and_the_code_page(site):
    email = new_email()
    location, _ = authorize(site, add_client(site), login_hint=email)
    assert field_value(site.get(path_of(location)).text, "username") == email
    code_page = site.get("/login/code", params={"request": query_of(location)["request"]})
    assert code_page.status_code == 200
    assert field_value(code_page.text, "identifier") == email
    assert messages_to(site, email) == 0, "a client that is not code-first sends nothing by itself"


def test_a_code_first_hint_gets_its_code_at_once_and_only_once_per_request(site, caplog):
    user = add_user(site, email=new_email())
    app = add_client(site, sign_in="code")
    location, verifier = authorize(site, app, login_hint=user.email)
    assert site.head(path_of(location)).status_code == 200, "a link checker's HEAD sends nothing"
    assert messages_to(site, user.email) == 0
    opened = site.get(path_of(location))
    assert opened.status_code == 303 and opened.headers["location"] == "/login/verify"
    assert messages_to(site, user.email) == 1

    for _ in range(2):  # a reload, the back button
        again = site.get(path_of(location))
        assert again.status_code == 200
        assert field_value(again.text, "identifier") == user.email
    assert messages_to(site, user.email) == 1

    back = enter_code(site, emailed_code(site, caplog, user.email))
    assert back.status_code == 303 and back.headers["location"].startswith(app.redirect_uri), back.text
    tokens = exchange(site, app, query_of(back.headers["location"])["code"], verifier)
    assert tokens.status_code == 200, tokens.text


def test_a_national_number_in_persian_digits_as_hint_gets_its_code(site):
    phone = new_phone()
    national = in_persian("0" + phone.removeprefix("+98"))
    location, _ = authorize(site, add_client(site, sign_in="code"), login_hint=national)
    assert site.get(path_of(location)).headers["location"] == "/login/verify"
    assert messages_to(site, phone) == 1


def test_with_password_sign_in_off_every_client_sends_its_hint_a_code(codes_only):
    email = new_email()
    location, _ = authorize(codes_only, add_client(codes_only), login_hint=email)
    assert codes_only.get(path_of(location)).headers["location"] == "/login/verify"
    assert messages_to(codes_only, email) == 1


def test_hints_never_send_more_than_the_per_number_limits_allow(site):
    email = new_email()
    app = add_client(site, sign_in="code")
    answers = []
    for _ in range(5):
        location, _ = authorize(site, app, login_hint=email)
        answers.append(site.get(path_of(location)))
    assert [a.status_code for a in answers] == [303, 303, 303, 200, 200]
    assert messages_to(site, email) == 3
    refused = answers[3]
    assert re.fullmatch(WAIT, alert_text(refused))
    assert field_value(refused.text, "identifier") == email


def test_hints_spend_the_code_pages_per_address_limit(module_environ):
    limits = {"IDP_RATE_LIMITING": "on", "IDP_RATE_LIMIT_VERIFICATION": "2/hour"}
    with running_app(module_environ, peer=new_address(), **limits) as site:
        app = add_client(site, sign_in="code")
        emails = [new_email() for _ in range(3)]
        answers = []
        for email in emails:
            location, _ = authorize(site, app, login_hint=email)
            answers.append(site.get(path_of(location)))
        assert [a.status_code for a in answers] == [303, 303, 200]
        assert alert_text(answers[2]).startswith("Too many attempts. Please try again in")
        assert [messages_to(site, email) for email in emails] == [1, 1, 0]
        assert ask_for_code(site, emails[2]).status_code == 429, "the page's own form is out of it too"


def test_a_known_and_an_unknown_hint_get_the_same_pages(module_environ):
    seen = []
    with running_app(module_environ) as setup:
        known = add_user(setup, email=new_email())
        app = add_client(setup, sign_in="code")
    for email in (known.email, new_email()):
        with running_app(module_environ, peer=new_address()) as browser:
            location, _ = authorize(browser, app, login_hint=email)
            opened = browser.get(path_of(location))
            verify = browser.get("/login/verify")
            seen.append(
                (opened.status_code, opened.headers.get("location"), verify.status_code, without_csrf(verify.text))
            )
            assert messages_to(browser, email) == 1
    assert seen[0] == seen[1]


def test_an_invalid_hint_is_ignored_for_sending_and_never_an_error(site):
    app = add_client(site, sign_in="code")
    for hint in ("not an address@", "12", "+98 000", "x" * 300):
        location, _ = authorize(site, app, login_hint=hint)
        page = site.get(path_of(location))
        assert page.status_code == 200, page.text
        assert 'role="alert"' not in page.text
        assert field_value(page.text, "identifier") is not None


# --- the command line -----------------------------------------------------------------------------


def test_clients_create_takes_sign_in_and_shows_it(env):  # noqa: F811
    ok(env, "migrate")
    good = ["clients", "create", "--name", "App", "--redirect-uri", "https://rp.example/cb"]
    made = ok(env, *good, "--sign-in", "code")[0]
    ok(env, *good)
    listed = {c["client_id"]: c["sign_in"] for c in clients(env)}
    assert listed[made["client_id"]] == "code"
    assert sorted(listed.values()) == ["code", "password"]


def test_clients_create_refuses_a_bad_sign_in_and_writes_nothing(env):  # noqa: F811
    ok(env, "migrate")
    good = ["clients", "create", "--name", "App", "--redirect-uri", "https://rp.example/cb"]
    assert_refused(run_idp(env, *good, "--sign-in", "sms"), "--sign-in")
    assert clients(env) == []
