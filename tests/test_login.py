"""The hosted sign-in page: form, CSRF, generic failures, verification, lockout, rehash."""

from __future__ import annotations

import re
import secrets

import pytest
from argon2 import PasswordHasher
from sqlalchemy import update

from idp.accounts.passwords import hash_password
from idp.accounts.users import disable_user
from idp.storage import User, now

from .conftest import PASSWORD, run_idp
from .flows import (
    assert_generic_failure,
    assert_signed_in,
    fail_times,
    hidden_fields,
    post_login,
    session_cookies,
)


def generic_error(http) -> str:  # type: ignore[no-untyped-def]
    """The one message every failed sign-in shows: that of an account that does not exist."""
    return assert_generic_failure(post_login(http, f"nobody-{secrets.token_hex(4)}@example.com", PASSWORD))


def stored_user(ctx, user_id: str) -> User:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        user = db.get(User, user_id)
        db.expunge(user)
        return user


# --- the form --------------------------------------------------------------------------------


def test_login_page_has_contract_fields(http):
    page = http.get("/login")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "no-store" in page.headers["cache-control"]
    assert re.search(r'<input[^>]*name="username"', page.text)
    assert re.search(
        r'<input[^>]*name="password"[^>]*type="password"|<input[^>]*type="password"[^>]*name="password"', page.text
    )
    assert hidden_fields(page.text)["csrf_token"]
    assert re.search(r'<form[^>]*method="post"', page.text)


@pytest.mark.parametrize("token", [None, "", "wrong-token"], ids=["missing", "empty", "wrong"])
def test_post_without_valid_csrf_token_is_refused(http, make_user, token):
    user = make_user()
    page = http.get("/login")
    data = {"username": user.email, "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    response = http.post("/login", data=data)
    assert response.status_code == 400
    assert 'role="alert"' in response.text
    assert f'value="{user.email}"' in response.text, "what was typed is shown again"
    assert PASSWORD not in response.text
    assert not session_cookies(response)
    assert "location" not in response.headers
    assert page.status_code == 200
    assert http.get("/account").status_code == 303, "no session was started"


def test_csrf_token_of_another_browser_is_refused(http, app, make_user):
    from starlette.testclient import TestClient

    user = make_user()
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as other:
        token = hidden_fields(other.get("/login").text)["csrf_token"]
    http.get("/login")
    response = http.post("/login", data={"csrf_token": token, "username": user.email, "password": PASSWORD})
    assert response.status_code == 400
    assert not session_cookies(response)


# --- one generic failure ---------------------------------------------------------------------


def test_wrong_password_unknown_account_and_disabled_user_answer_the_same(http, make_user, ctx):
    user = make_user()
    disabled = make_user()
    with ctx.db.begin() as db:
        disable_user(db, disabled.id)
    unknown = generic_error(http)
    wrong = assert_generic_failure(post_login(http, user.email, "not the password at all"))
    off = assert_generic_failure(post_login(http, disabled.email, PASSWORD))
    assert unknown == wrong == off
    assert "verif" not in unknown.lower()


def test_unknown_phone_number_gets_the_generic_error(http):
    generic = generic_error(http)
    assert assert_generic_failure(post_login(http, "+14155550000", PASSWORD)) == generic
    assert assert_generic_failure(post_login(http, "not an identifier", PASSWORD)) == generic


@pytest.mark.parametrize("username", ["ada_lovelace", "2125550123"])
def test_a_person_signs_in_by_their_username_too(http, make_user, ctx, username):
    """People brought from a system that signed in by username keep doing so; one that looks like
    a number (but is nobody's) is still theirs."""
    user = make_user()
    taken = f"{username}{secrets.randbelow(10**6)}"
    with ctx.db.begin() as db:
        db.execute(update(User).where(User.id == user.id).values(preferred_username=taken))
    generic = generic_error(http)
    assert assert_generic_failure(post_login(http, taken, "not the password at all")) == generic
    if taken.upper() != taken:
        assert assert_generic_failure(post_login(http, taken.upper(), PASSWORD)) == generic, "exactly as it is"
    assert_signed_in(post_login(http, taken, PASSWORD))


def test_failed_sign_in_keeps_the_username(http, make_user):
    user = make_user()
    response = post_login(http, user.email, "not the password at all")
    assert re.search(r'<input[^>]*name="username"[^>]*value="' + re.escape(user.email) + '"', response.text)
    assert PASSWORD not in response.text


def test_username_is_case_insensitive_email(http, make_user):
    user = make_user()
    assert_signed_in(post_login(http, "  " + user.email.upper(), PASSWORD))


# --- verified email --------------------------------------------------------------------------


def test_unverified_user_is_told_to_verify_and_gets_no_session(http, make_user):
    user = make_user(verified=False)
    response = post_login(http, user.email, PASSWORD)
    message = assert_generic_failure(response)
    assert "verify" in message.lower()
    assert message != generic_error(http)
    assert http.get("/account").status_code == 303


def test_unverified_user_with_wrong_password_gets_the_generic_error(http, make_user):
    user = make_user(verified=False)
    message = assert_generic_failure(post_login(http, user.email, "not the password at all"))
    assert message == generic_error(http)


def test_unverified_user_signs_in_when_verification_is_not_required(base_environ, make_user):
    from starlette.testclient import TestClient

    from idp.app import create_app

    from .conftest import make_settings

    user = make_user(verified=False)
    app = create_app(make_settings(base_environ, IDP_REQUIRE_VERIFIED_EMAIL="off"))
    try:
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            assert_signed_in(post_login(client, user.email, PASSWORD))
    finally:
        app.state.ctx.close()


# --- lockout ---------------------------------------------------------------------------------


def test_five_failures_lock_the_account_until_unlocked(http, make_user, base_environ):
    user = make_user()
    generic = generic_error(http)
    fail_times(http, user.email, 5)
    locked = post_login(http, user.email, PASSWORD)
    assert assert_generic_failure(locked) == generic, "a locked account answers like any failure"

    result = run_idp(base_environ, "users", "unlock", user.id)
    assert result.returncode == 0, result.stderr
    assert_signed_in(post_login(http, user.email, PASSWORD))


def test_unlock_through_the_service(http, make_user, ctx):
    from idp.accounts.users import unlock_user

    user = make_user()
    fail_times(http, user.email, 5)
    assert_generic_failure(post_login(http, user.email, PASSWORD))
    with ctx.db.begin() as db:
        unlock_user(db, user.id)
    assert_signed_in(post_login(http, user.email, PASSWORD))


def test_lock_ends_by_itself_when_its_time_is_up(http, make_user, ctx):
    user = make_user()
    fail_times(http, user.email, 5)
    assert stored_user(ctx, user.id).locked_until is not None
    with ctx.db.begin() as db:
        db.execute(update(User).where(User.id == user.id).values(locked_until=now() - 1))
    assert_signed_in(post_login(http, user.email, PASSWORD))


def test_four_failures_do_not_lock(http, make_user):
    user = make_user()
    fail_times(http, user.email, 4)
    assert_signed_in(post_login(http, user.email, PASSWORD))


def test_success_resets_the_failure_count(http, make_user):
    user = make_user()
    fail_times(http, user.email, 4)
    assert_signed_in(post_login(http, user.email, PASSWORD))
    http.cookies.clear()
    fail_times(http, user.email, 4)
    assert_signed_in(post_login(http, user.email, PASSWORD))


def test_lockout_of_one_account_leaves_others_alone(http, make_user):
    locked, other = make_user(), make_user()
    fail_times(http, locked.email, 5)
    assert_signed_in(post_login(http, other.email, PASSWORD))


# --- phone numbers ---------------------------------------------------------------------------


def test_sign_in_with_e164_phone_number(http, make_user):
    phone = f"+1415{secrets.randbelow(8_000_000) + 2_000_000}"
    user = make_user(phone=phone)
    assert_signed_in(post_login(http, phone, PASSWORD))
    account = http.get("/account")
    assert account.status_code == 200 and user.email in account.text


# --- password hashes -------------------------------------------------------------------------


def test_weak_hash_is_rehashed_on_sign_in(http, make_user, ctx):
    user = make_user()
    weak = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    with ctx.db.begin() as db:
        db.execute(update(User).where(User.id == user.id).values(password_hash=weak))
    assert_signed_in(post_login(http, user.email, PASSWORD))
    stored = stored_user(ctx, user.id).password_hash
    assert stored != weak
    hasher = PasswordHasher()
    assert hasher.verify(stored, PASSWORD)
    assert not hasher.check_needs_rehash(stored)
    assert stored.startswith("$argon2id$")


def test_current_hash_is_not_rewritten(http, make_user, ctx):
    user = make_user()
    before = stored_user(ctx, user.id).password_hash
    assert_signed_in(post_login(http, user.email, PASSWORD))
    assert stored_user(ctx, user.id).password_hash == before


def test_weak_hash_is_not_rehashed_on_wrong_password(http, make_user, ctx):
    user = make_user()
    weak = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    with ctx.db.begin() as db:
        db.execute(update(User).where(User.id == user.id).values(password_hash=weak))
    assert_generic_failure(post_login(http, user.email, "not the password at all"))
    assert stored_user(ctx, user.id).password_hash == weak


def test_stored_hashes_are_argon2id(make_user, ctx):
    user = make_user()
    stored = stored_user(ctx, user.id).password_hash
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert hash_password(PASSWORD) != stored, "salted"


# --- without a pending request ---------------------------------------------------------------


def test_login_without_request_then_account_shows_email(http, make_user):
    user = make_user()
    page = http.get("/login")
    assert page.status_code == 200
    assert "request" not in hidden_fields(page.text)
    assert_signed_in(post_login(http, user.email, PASSWORD))
    account = http.get("/account")
    assert account.status_code == 200
    assert user.email in account.text


def test_account_without_session_redirects_to_login(http):
    response = http.get("/account")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_account_with_forged_session_cookie_redirects_to_login(http):
    http.cookies.set("idp_session", secrets.token_urlsafe(32))
    response = http.get("/account")
    assert response.status_code == 303 and response.headers["location"] == "/login"


def test_signing_in_again_replaces_the_previous_session(http, make_user):
    first, second = make_user(), make_user()
    assert_signed_in(post_login(http, first.email, PASSWORD))
    old_cookie = http.cookies.get("idp_session")
    assert_signed_in(post_login(http, second.email, PASSWORD))
    assert second.email in http.get("/account").text
    http.cookies.set("idp_session", old_cookie)
    assert http.get("/account").status_code == 303, "the replaced session has ended"


# --- malformed bodies ------------------------------------------------------------------------


def test_oversized_body_is_a_400_page(http):
    page = http.get("/login")
    data = {**hidden_fields(page.text), "username": "a@example.com", "password": "x" * (65 * 1024)}
    response = http.post("/login", data=data)
    assert response.status_code == 400
    assert 'role="alert"' in response.text
    assert not session_cookies(response)


def test_oversized_body_without_content_length_is_a_400_page(http):
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(80):
            yield b"x" * 1024

    response = http.post("/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert 'role="alert"' in response.text


def test_non_form_body_is_a_400_page(http):
    response = http.post("/login", content=b'{"username": "a"}', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert 'role="alert"' in response.text


def test_overlong_username_is_a_generic_failure(http):
    generic = generic_error(http)
    assert assert_generic_failure(post_login(http, "a" * 400 + "@example.com", PASSWORD)) == generic
