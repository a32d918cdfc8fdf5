"""Single sign-on sessions end after ``IDP_SESSION_TTL`` whatever happens (``IDP_REMEMBER_TTL``
for a person who ticked "Keep me signed in"), and after ``IDP_SESSION_IDLE_TTL`` of disuse: a
browser left signed in on a shared machine stops signing anyone in once nobody has used it for
that long (ASVS V7.3.1)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from idp import sso
from idp.app import create_app
from idp.sso import find_session
from idp.storage import BrowserSession, User, now
from idp.web.browser import SESSION_COOKIE

from .conftest import TEST_ISSUER, make_settings
from .flows import (
    assert_signed_in,
    authorize_params,
    emailed_code,
    enter_code,
    pkce_pair,
    post_login,
    query_of,
    sign_in,
    tokens_for,
)
from .test_account import post_form

IDLE_TTL = 900


@pytest.fixture(scope="module")
def idle_app(base_environ, settings):  # type: ignore[no-untyped-def]
    """An app with an idle timeout, on the suite's database (``settings`` made the signing key)."""
    application = create_app(make_settings(base_environ, IDP_SESSION_IDLE_TTL=str(IDLE_TTL)))
    yield application
    application.state.ctx.close()


@pytest.fixture
def browser(idle_app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(idle_app, base_url=TEST_ISSUER, follow_redirects=False) as client:
        yield client


def _signed_in(browser: TestClient, make_user) -> str:  # type: ignore[no-untyped-def]
    """Sign a new person in; the session's id."""
    user = make_user()
    response = post_login(browser, user.email, user.password)
    assert_signed_in(response)
    with browser.app.state.ctx.db() as db:  # type: ignore[attr-defined]
        return db.query(BrowserSession.id).filter_by(user_id=user.id).one()[0]


def _idle_for(browser: TestClient, session_id: str, seconds: int) -> None:
    """The session was last used ``seconds`` ago."""
    with browser.app.state.ctx.db.begin() as db:  # type: ignore[attr-defined]
        db.execute(update(BrowserSession).where(BrowserSession.id == session_id).values(last_seen_at=now() - seconds))


def _last_seen(browser: TestClient, session_id: str) -> int:
    with browser.app.state.ctx.db() as db:  # type: ignore[attr-defined]
        return db.get_one(BrowserSession, session_id).last_seen_at


def test_an_idle_session_no_longer_opens_the_account(browser, make_user):
    session_id = _signed_in(browser, make_user)
    assert browser.get("/account").status_code == 200
    _idle_for(browser, session_id, IDLE_TTL + 1)
    response = browser.get("/account")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_an_idle_session_is_asked_to_sign_in_again_at_authorize(browser, make_user, make_client):
    client = make_client()
    user = make_user()
    sign_in(browser, client, user, pkce_pair()[1])
    with browser.app.state.ctx.db() as db:  # type: ignore[attr-defined]
        session_id = db.query(BrowserSession.id).filter_by(user_id=user.id).one()[0]
    _idle_for(browser, session_id, IDLE_TTL + 1)

    response = browser.get("/authorize", params=authorize_params(client, pkce_pair()[1]))
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login"), response.headers["location"]

    silent = browser.get("/authorize", params=authorize_params(client, pkce_pair()[1], prompt="none"))
    assert silent.status_code == 303
    assert query_of(silent.headers["location"])["error"] == "login_required"


def test_use_renews_a_session_before_it_goes_idle(browser, make_user):
    session_id = _signed_in(browser, make_user)
    _idle_for(browser, session_id, IDLE_TTL - 60)
    assert browser.get("/account").status_code == 200
    assert _last_seen(browser, session_id) >= now() - 5

    _idle_for(browser, session_id, IDLE_TTL - 60)
    assert browser.get("/account").status_code == 200


def test_use_writes_the_last_use_at_most_once_a_minute(browser, make_user):
    session_id = _signed_in(browser, make_user)
    _idle_for(browser, session_id, 30)
    seen = _last_seen(browser, session_id)
    assert browser.get("/account").status_code == 200
    assert _last_seen(browser, session_id) == seen


def test_finding_a_session_writes_nothing_and_each_request_served_in_it_notes_its_use(browser, make_user, make_client):
    """The lookup is only a lookup; the use is noted where a request is served to the session's
    person: a page of the account, an app's sign-in at /authorize, a change on /account."""
    client = make_client()
    user = make_user()
    sign_in(browser, client, user, pkce_pair()[1])
    ctx = browser.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db() as db:
        session_id = db.query(BrowserSession.id).filter_by(user_id=user.id).one()[0]
    _idle_for(browser, session_id, 120)
    seen = _last_seen(browser, session_id)
    with ctx.db() as db:
        active = find_session(db, browser.cookies.get(SESSION_COOKIE), idle_timeout=IDLE_TTL)
        assert active is not None and active.session.id == session_id
        assert not db.dirty and not db.new
        db.commit()
    assert _last_seen(browser, session_id) == seen

    served = {
        "account": lambda: browser.get("/account"),
        "security": lambda: browser.get("/account/security"),
        "authorize": lambda: browser.get("/authorize", params=authorize_params(client, pkce_pair()[1])),
        "change": lambda: post_form(browser, "/account/profile", name="Ada"),
    }
    for name, serve in served.items():
        _idle_for(browser, session_id, 120)
        assert serve().status_code in (200, 303), name
        assert _last_seen(browser, session_id) >= now() - 5, name


def test_an_idle_session_can_still_be_signed_out_and_its_grants_end(browser, make_user, make_client):
    client = make_client()
    user = make_user()
    tokens = tokens_for(browser, client, user)
    with browser.app.state.ctx.db() as db:  # type: ignore[attr-defined]
        session_id = db.query(BrowserSession.id).filter_by(user_id=user.id).one()[0]
    _idle_for(browser, session_id, IDLE_TTL + 1)

    response = browser.get(
        "/logout", params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://rp.example/bye"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "https://rp.example/bye"
    with browser.app.state.ctx.db() as db:  # type: ignore[attr-defined]
        assert db.get_one(BrowserSession, session_id).ended_at is not None
    refresh = browser.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=client.auth
    )
    assert refresh.status_code == 400


def test_session_lifetime_comes_from_the_setting(base_environ, settings, make_user):  # type: ignore[no-untyped-def]
    application = create_app(make_settings(base_environ, IDP_SESSION_TTL="3600"))
    try:
        with TestClient(application, base_url=TEST_ISSUER, follow_redirects=False) as client:
            user = make_user()
            response = post_login(client, user.email, user.password)
            assert_signed_in(response)
            assert "Max-Age=3600" in response.headers["set-cookie"]
            with application.state.ctx.db() as db:
                row = db.query(BrowserSession).filter_by(user_id=user.id).one()
                assert row.expires_at - row.created_at == 3600
    finally:
        application.state.ctx.close()


def test_without_an_idle_timeout_an_old_last_use_still_signs_in(http, make_user):
    user = make_user()
    assert_signed_in(post_login(http, user.email, user.password))
    with http.app.state.ctx.db.begin() as db:  # type: ignore[attr-defined]
        long_ago = now() - 11 * 3600
        db.execute(update(BrowserSession).where(BrowserSession.user_id == user.id).values(last_seen_at=long_ago))
    assert http.get("/account").status_code == 200


REMEMBER_TTL = 86_400


@pytest.fixture(scope="module")
def remembering_app(base_environ, settings):  # type: ignore[no-untyped-def]
    application = create_app(make_settings(base_environ, IDP_SESSION_TTL="3600", IDP_REMEMBER_TTL=str(REMEMBER_TTL)))
    yield application
    application.state.ctx.close()


def _browser(application) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(application, base_url=TEST_ISSUER, follow_redirects=False)


def _session_row(application, user_id: str) -> BrowserSession:  # type: ignore[no-untyped-def]
    with application.state.ctx.db() as db:
        row = db.query(BrowserSession).filter_by(user_id=user_id).one()
        db.expunge(row)
        return row


def test_keep_me_signed_in_gives_a_longer_session_and_cookie(remembering_app, make_user):
    user = make_user()
    with _browser(remembering_app) as browser:
        response = post_login(browser, user.email, user.password, remember="yes")
        assert_signed_in(response)
        assert f"Max-Age={REMEMBER_TTL}" in response.headers["set-cookie"]
    row = _session_row(remembering_app, user.id)
    assert row.expires_at - row.created_at == REMEMBER_TTL


def test_a_remembered_session_outlives_the_session_ttl_and_another_does_not(remembering_app, make_user, monkeypatch):
    kept, plain = make_user(), make_user()
    with _browser(remembering_app) as remembered, _browser(remembering_app) as forgotten:
        assert_signed_in(post_login(remembered, kept.email, kept.password, remember="yes"))
        assert_signed_in(post_login(forgotten, plain.email, plain.password))
        later = now() + 3600 + 60
        monkeypatch.setattr(sso, "now", lambda: later)
        assert remembered.get("/account").status_code == 200
        response = forgotten.get("/account")
        assert response.status_code == 303 and response.headers["location"] == "/login"


def test_keep_me_signed_in_waits_through_a_second_factor(remembering_app, make_user, caplog):
    """The choice made with the password holds once the second step is done."""
    caplog.set_level(logging.INFO, logger="idp.messages")
    user = make_user()
    with remembering_app.state.ctx.db.begin() as db:
        db.get_one(User, user.id).mfa_method = "email"
    with _browser(remembering_app) as browser:
        response = post_login(browser, user.email, user.password, remember="yes")
        assert response.headers["location"] == "/login/verify"
        assert_signed_in(enter_code(browser, emailed_code(browser, caplog, user.email)))
    row = _session_row(remembering_app, user.id)
    assert row.expires_at - row.created_at == REMEMBER_TTL


def test_a_remembered_session_still_goes_idle(base_environ, settings, make_user):  # type: ignore[no-untyped-def]
    application = create_app(make_settings(base_environ, IDP_SESSION_IDLE_TTL=str(IDLE_TTL)))
    try:
        with _browser(application) as browser:
            user = make_user()
            assert_signed_in(post_login(browser, user.email, user.password, remember="yes"))
            session_id = _session_row(application, user.id).id
            _idle_for(browser, session_id, IDLE_TTL + 1)
            response = browser.get("/account")
            assert response.status_code == 303 and response.headers["location"] == "/login"
    finally:
        application.state.ctx.close()
