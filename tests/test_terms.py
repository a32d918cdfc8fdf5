"""Terms people must accept (IDP_TERMS_URL, IDP_TERMS_VERSION): at registration, and at the first
sign-in through an application after the version changes; declining tells the application no."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.app import create_app
from idp.settings import SettingsError
from idp.storage import AuditEvent, User

from .conftest import PASSWORD, TEST_ISSUER, make_settings
from .flows import authorize_params, hidden_fields, pkce_pair, query_of, submit_login
from .test_first_party_apps import add_client, begin, emailed_code, post

TERMS = "https://example.com/terms"


@pytest.fixture
def with_terms(base_environ) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A browser of an app whose terms are at ``version``."""
    apps = []

    def start(version: str = "2026-12") -> TestClient:
        app = create_app(make_settings(base_environ, IDP_TERMS_URL=TERMS, IDP_TERMS_VERSION=version))
        apps.append(app)
        return TestClient(app, base_url=TEST_ISSUER, follow_redirects=False)

    yield start
    for app in apps:
        app.state.ctx.close()


def stored(ctx: Any, user_id: str) -> User:
    with ctx.db() as db:
        user = db.get(User, user_id)
        assert user is not None
        return user


def authorize(browser: TestClient, client: Any, **overrides: str) -> str:
    _, challenge = pkce_pair()
    response = browser.get("/authorize", params=authorize_params(client, challenge, **overrides))
    assert response.status_code == 303, response.text
    return response.headers["location"]


def test_terms_are_both_set_or_neither(base_environ):
    for half in ({"IDP_TERMS_URL": TERMS}, {"IDP_TERMS_VERSION": "1"}):
        with pytest.raises(SettingsError, match="IDP_TERMS_URL and IDP_TERMS_VERSION"):
            make_settings(base_environ, **half)
    with pytest.raises(SettingsError, match="IDP_TERMS_URL"):
        make_settings(base_environ, IDP_TERMS_URL="javascript:alert(1)", IDP_TERMS_VERSION="1")


def test_a_sign_in_asks_for_the_terms_once_per_version(with_terms, ctx, make_client, make_user):
    client, user = make_client(first_party=True), make_user()
    browser = with_terms("2026-12")
    login = authorize(browser, client)
    asked = submit_login(browser, login, user.email, PASSWORD)
    assert urlsplit(asked.headers["location"]).path == "/terms"
    page = browser.get(asked.headers["location"])
    assert page.status_code == 200 and f'href="{TERMS}"' in page.text
    accepted = browser.post("/terms", data={**hidden_fields(page.text), "decision": "accept"})
    assert accepted.status_code == 303 and "code" in query_of(accepted.headers["location"])
    person = stored(ctx, user.id)
    assert person.terms_version == "2026-12" and person.terms_accepted_at
    with ctx.db() as db:
        [event] = db.scalars(
            select(AuditEvent).where(AuditEvent.user_id == user.id, AuditEvent.event == "terms_accepted")
        )
    assert event.detail == {"version": "2026-12"} and event.client_id == client.client_id

    again = authorize(browser, client)
    assert "code" in query_of(again), "accepted once, not asked again"
    newer = with_terms("2027-01")
    newer.cookies = browser.cookies
    assert urlsplit(authorize(newer, client)).path == "/terms", "a new version asks again"


def test_declining_the_terms_is_access_denied_for_the_application(with_terms, ctx, make_client, make_user):
    client, user = make_client(first_party=True), make_user()
    browser = with_terms()
    asked = submit_login(browser, authorize(browser, client, state="s1"), user.email, PASSWORD)
    page = browser.get(asked.headers["location"])
    declined = browser.post("/terms", data={**hidden_fields(page.text), "decision": "decline"})
    answer = query_of(declined.headers["location"])
    assert answer["error"] == "access_denied" and answer["state"] == "s1"
    assert stored(ctx, user.id).terms_version is None


def test_terms_come_before_consent_and_consent_cannot_skip_them(with_terms, make_client, make_user):
    client, user = make_client(), make_user()
    browser = with_terms()
    asked = submit_login(browser, authorize(browser, client), user.email, PASSWORD)
    terms_page = asked.headers["location"]
    assert urlsplit(terms_page).path == "/terms"
    skipped = browser.get(terms_page.replace("/terms", "/consent"))
    assert skipped.status_code == 303 and urlsplit(skipped.headers["location"]).path == "/terms"
    page = browser.get(terms_page)
    accepted = browser.post("/terms", data={**hidden_fields(page.text), "decision": "accept"})
    assert urlsplit(accepted.headers["location"]).path == "/consent"


def test_prompt_none_with_terms_to_accept_is_interaction_required(with_terms, make_client, make_user):
    client, user = make_client(first_party=True), make_user()
    browser = with_terms()
    page = browser.get("/login")
    assert browser.post("/login", data={**hidden_fields(page.text), "username": user.email, "password": PASSWORD})
    silent = query_of(authorize(browser, client, prompt="none"))
    assert silent["error"] == "interaction_required"


def test_registration_needs_the_terms_and_keeps_the_acceptance(with_terms, ctx):
    browser = with_terms()
    page = browser.get("/register")
    assert 'name="accept_terms"' in page.text and f'href="{TERMS}"' in page.text
    email = "terms-register@example.com"
    form = {**hidden_fields(page.text), "email": email, "password": PASSWORD, "password_confirm": PASSWORD}
    refused = browser.post("/register", data=form)
    assert refused.status_code == 400 and "Accept the terms to create an account." in refused.text
    with ctx.db() as db:
        assert db.scalar(select(User).where(User.email == email)) is None
    made = browser.post("/register", data={**form, "accept_terms": "yes"})
    assert made.status_code == 200, made.text
    with ctx.db() as db:
        person = db.scalar(select(User).where(User.email == email))
    assert person is not None and person.terms_version == "2026-12"


def test_a_first_party_app_is_sent_to_the_browser_for_the_terms(with_terms, caplog, make_user):
    caplog.set_level("INFO", logger="idp.messages")
    browser = with_terms()
    app, user = add_client(browser), make_user()
    challenge, verifier = begin(browser, app, user.email)
    code = emailed_code(browser, caplog, user.email)
    answered = post(browser, app, auth_session=challenge["auth_session"], otp=code)
    assert answered.status_code == 400 and answered.json()["error"] == "redirect_to_web", answered.text
