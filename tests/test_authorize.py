"""The authorization endpoint: RFC 6749 §4.1.1-4.1.2.1, RFC 7636, OIDC Core §3.1.2, RFC 9207,
OAuth 2.0 Form Post Response Mode, and the single sign-on and consent decisions behind it."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import pytest
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from idp.app import create_app
from idp.storage import AuthorizationCode, AuthorizationRequest, now

from .conftest import PASSWORD, TEST_ISSUER, make_settings
from .flows import (
    authorize_params,
    exchange,
    hidden_fields,
    path_of,
    pkce_pair,
    query_of,
    sign_in,
    submit_consent,
    submit_login,
    tokens_for,
)

_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.DOTALL | re.IGNORECASE)


# --- helpers ---------------------------------------------------------------------------------


def get_authorize(http, pairs: list[tuple[str, str]] | dict[str, str]):  # type: ignore[no-untyped-def]
    """GET /authorize with a raw query, so that a parameter can be repeated."""
    items = list(pairs.items()) if isinstance(pairs, dict) else pairs
    return http.get("/authorize?" + urlencode(items))


def assert_error_page(response) -> None:  # type: ignore[no-untyped-def]
    """A bad client or redirect target: an HTML page, never a redirect (RFC 6749 §4.1.2.1)."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in response.text


def assert_error_redirect(response, redirect_uri: str, error: str, state: str | None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.split("?")[0] == redirect_uri.split("?")[0], location
    query = query_of(location)
    assert query["error"] == error, query
    assert query["iss"] == TEST_ISSUER
    if state is not None:
        assert query["state"] == state
    assert "code" not in query
    return query


def id_token_claims(http, token: str, client_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Verify an ID token against the published JWKS, as a relying party would."""
    jwks = jwt.PyJWKSet.from_dict(http.get("/jwks.json").json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=client_id, issuer=TEST_ISSUER)


def location_path(response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 303, response.text
    return urlsplit(response.headers["location"]).path


def first_party_session(http, make_client, user) -> None:  # type: ignore[no-untyped-def]
    """Sign the browser in through a first-party app, so a single sign-on session exists."""
    sign_in(http, make_client(first_party=True), user, pkce_pair()[1])


def code_count(ctx, client_id: str) -> int:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        return db.scalar(
            select(func.count()).select_from(AuthorizationCode).where(AuthorizationCode.client_id == client_id)
        )


# --- bad client or redirect target: error page, no redirect ----------------------------------


def _target_cases(client_id: str, redirect_uri: str) -> dict[str, list[tuple[str, str]]]:
    base = [("response_type", "code"), ("scope", "openid"), ("state", "s1")]
    return {
        "unknown client_id": [("client_id", "no-such-client"), ("redirect_uri", redirect_uri), *base],
        "missing client_id": [("redirect_uri", redirect_uri), *base],
        "repeated client_id": [
            ("client_id", client_id),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            *base,
        ],
        "missing redirect_uri": [("client_id", client_id), *base],
        "unregistered redirect_uri": [("client_id", client_id), ("redirect_uri", "https://evil.example/cb"), *base],
        "repeated redirect_uri": [
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("redirect_uri", redirect_uri),
            *base,
        ],
        "trailing slash": [("client_id", client_id), ("redirect_uri", redirect_uri + "/"), *base],
        "different case": [("client_id", client_id), ("redirect_uri", redirect_uri.upper()), *base],
        "different case of path": [
            ("client_id", client_id),
            ("redirect_uri", redirect_uri.replace("/cb", "/CB")),
            *base,
        ],
        "extra query": [("client_id", client_id), ("redirect_uri", redirect_uri + "?x=1"), *base],
    }


@pytest.mark.parametrize("case", list(_target_cases("c", "https://rp.example/cb")))
def test_bad_client_or_redirect_uri_shows_error_page_and_never_redirects(http, make_client, case):
    client = make_client()
    response = get_authorize(http, _target_cases(client.client_id, client.redirect_uri)[case])
    assert_error_page(response)
    assert "evil.example" not in response.headers.get("location", "")


def test_bad_redirect_uri_on_post_also_shows_error_page(http, make_client):
    client = make_client()
    params = authorize_params(client, pkce_pair()[1], redirect_uri="https://evil.example/cb")
    response = http.post("/authorize", data=params)
    assert_error_page(response)


# --- every other error: redirect with error, state and iss -----------------------------------

_CHALLENGE = pkce_pair()[1]
_REDIRECT_ERRORS: dict[str, tuple[dict[str, str | None], str]] = {
    "missing response_type": ({"response_type": ""}, "invalid_request"),
    "response_type token": ({"response_type": "token"}, "unsupported_response_type"),
    "response_type id_token": ({"response_type": "code id_token"}, "unsupported_response_type"),
    "request object": ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    "request_uri": ({"request_uri": "https://rp.example/request.jwt"}, "request_uri_not_supported"),
    "unknown scope": ({"scope": "openid bogus"}, "invalid_scope"),
    "missing scope": ({"scope": ""}, "invalid_scope"),
    "plain challenge method": ({"code_challenge_method": "plain"}, "invalid_request"),
    "challenge without method": ({"code_challenge_method": ""}, "invalid_request"),
    "method without challenge": ({"code_challenge": ""}, "invalid_request"),
    "short challenge": ({"code_challenge": "abc"}, "invalid_request"),
    "challenge with bad characters": ({"code_challenge": "!" * 43}, "invalid_request"),
    "unknown prompt": ({"prompt": "bogus"}, "invalid_request"),
    "prompt none with login": ({"prompt": "none login"}, "invalid_request"),
    "negative max_age": ({"max_age": "-1"}, "invalid_request"),
    "non-numeric max_age": ({"max_age": "soon"}, "invalid_request"),
    "garbage id_token_hint": ({"id_token_hint": "not-a-jwt"}, "invalid_request"),
    "oversized nonce": ({"nonce": "n" * 513}, "invalid_request"),
    "unknown response_mode": ({"response_mode": "fragment"}, "invalid_request"),
}


@pytest.mark.parametrize("case", list(_REDIRECT_ERRORS))
def test_invalid_request_redirects_with_error_state_and_iss(http, make_client, case):
    client = make_client()
    overrides, error = _REDIRECT_ERRORS[case]
    params = authorize_params(client, _CHALLENGE, state="state-123", **{k: v for k, v in overrides.items()})
    for name, value in overrides.items():
        if value == "":
            params.pop(name, None)
    response = get_authorize(http, params)
    assert_error_redirect(response, client.redirect_uri, error, "state-123")


def test_scope_not_registered_for_client_is_invalid_scope(http, make_client):
    client = make_client(scope="openid email")
    response = get_authorize(http, authorize_params(client, _CHALLENGE, scope="openid phone", state="st"))
    assert_error_redirect(response, client.redirect_uri, "invalid_scope", "st")


def test_public_client_without_pkce_is_invalid_request(http, make_client):
    client = make_client(auth_method="none")
    response = get_authorize(http, authorize_params(client, None, state="st"))
    assert_error_redirect(response, client.redirect_uri, "invalid_request", "st")


def test_confidential_client_without_pkce_is_accepted(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    callback = sign_in(http, client, user, None)
    assert "code" in callback


def test_id_token_hint_for_another_client_is_invalid_request(http, make_client, make_user):
    client_a = make_client(first_party=True)
    client_b = make_client()
    tokens = tokens_for(http, client_a, make_user())
    params = authorize_params(client_b, _CHALLENGE, state="st", id_token_hint=tokens["id_token"])
    assert_error_redirect(get_authorize(http, params), client_b.redirect_uri, "invalid_request", "st")


def test_access_token_as_id_token_hint_is_invalid_request(http, make_client, make_user):
    client = make_client(first_party=True)
    tokens = tokens_for(http, client, make_user())
    params = authorize_params(client, _CHALLENGE, state="st", id_token_hint=tokens["access_token"])
    assert_error_redirect(get_authorize(http, params), client.redirect_uri, "invalid_request", "st")


@pytest.mark.parametrize("name", ["scope", "state", "response_type", "code_challenge", "nonce", "prompt"])
def test_repeated_parameter_is_invalid_request(http, make_client, name):
    client = make_client()
    params = authorize_params(client, _CHALLENGE, state="st", prompt="login")
    pairs = list(params.items()) + [(name, params[name])]
    response = get_authorize(http, pairs)
    assert_error_redirect(response, client.redirect_uri, "invalid_request", "st")


def test_oversized_state_is_invalid_request_and_not_reflected(http, make_client):
    client = make_client()
    response = get_authorize(http, authorize_params(client, _CHALLENGE, state="s" * 2049))
    query = assert_error_redirect(response, client.redirect_uri, "invalid_request", None)
    assert len(response.headers["location"]) < 2000
    assert "state" not in query


def test_client_without_authorization_code_grant_is_unauthorized_client(http, make_client):
    client = make_client(grant_types=["client_credentials"])
    response = get_authorize(http, authorize_params(client, _CHALLENGE, state="st"))
    assert_error_redirect(response, client.redirect_uri, "unauthorized_client", "st")


def test_error_redirect_keeps_query_of_registered_redirect_uri(http, make_client):
    client = make_client(redirect_uris=["https://rp.example/cb?tenant=acme&x=1"])
    response = get_authorize(http, authorize_params(client, _CHALLENGE, state="st", response_type="token"))
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("https://rp.example/cb?")
    query = query_of(location)
    assert query["tenant"] == "acme" and query["x"] == "1"
    assert query["error"] == "unsupported_response_type"
    assert query["state"] == "st" and query["iss"] == TEST_ISSUER


def test_success_redirect_keeps_query_of_registered_redirect_uri(http, make_client, make_user):
    client = make_client(redirect_uris=["https://rp.example/cb?tenant=acme"], first_party=True)
    callback = sign_in(http, client, make_user(), _CHALLENGE, state="st")
    assert callback["tenant"] == "acme"
    assert callback["state"] == "st" and callback["iss"] == TEST_ISSUER and callback["code"]


def test_post_authorization_request_is_accepted(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    response = http.post("/authorize", data=authorize_params(client, _CHALLENGE, state="st"))
    assert location_path(response) == "/login"
    response = submit_login(http, response.headers["location"], user.email, PASSWORD)
    query = query_of(response.headers["location"])
    assert query["code"] and query["state"] == "st" and query["iss"] == TEST_ISSUER


# --- response_mode=form_post -----------------------------------------------------------------


def assert_form_post_page(response, redirect_uri: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "no-store" in response.headers["cache-control"]
    html = response.text
    assert re.search(r'<form method="post" action="' + re.escape(redirect_uri) + '"', html), html
    scripts = _SCRIPT.findall(html)
    assert scripts, "the page must submit itself with a script"
    for attributes, body in scripts:
        assert "src=" in attributes and body.strip() == "", "no inline script: the CSP forbids it"
    assert "'unsafe-inline'" not in response.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    return hidden_fields(html)


def test_form_post_response_posts_code_state_and_iss(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    first_party_session(http, make_client, user)
    verifier, challenge = pkce_pair()
    response = get_authorize(http, authorize_params(client, challenge, state="st-fp", response_mode="form_post"))
    fields = assert_form_post_page(response, client.redirect_uri)
    assert fields["state"] == "st-fp" and fields["iss"] == TEST_ISSUER
    assert exchange(http, client, fields["code"], verifier).status_code == 200


def test_form_post_after_sign_in_posts_the_code(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    response = get_authorize(http, authorize_params(client, _CHALLENGE, state="st", response_mode="form_post"))
    response = submit_login(http, response.headers["location"], user.email, PASSWORD)
    fields = assert_form_post_page(response, client.redirect_uri)
    assert fields["code"] and fields["state"] == "st" and fields["iss"] == TEST_ISSUER


def test_form_post_error_is_posted_too(http, make_client):
    client = make_client()
    params = authorize_params(client, _CHALLENGE, state="st-err", response_mode="form_post", response_type="token")
    fields = assert_form_post_page(get_authorize(http, params), client.redirect_uri)
    assert fields["error"] == "unsupported_response_type"
    assert fields["state"] == "st-err" and fields["iss"] == TEST_ISSUER
    assert "code" not in fields


def test_form_post_escapes_state(http, make_client):
    client = make_client()
    state = '"><script>alert(1)</script>'
    params = authorize_params(client, _CHALLENGE, state=state, response_mode="form_post", response_type="token")
    response = get_authorize(http, params)
    assert response.status_code == 200
    assert "<script>alert(1)" not in response.text


# --- single sign-on --------------------------------------------------------------------------


def test_second_first_party_app_signs_in_without_password(http, make_client, make_user):
    user = make_user()
    client_a = make_client()
    sign_in(http, client_a, user, _CHALLENGE)
    client_b = make_client(first_party=True)
    response = get_authorize(http, authorize_params(client_b, _CHALLENGE, state="b"))
    assert response.headers["location"].startswith(client_b.redirect_uri)
    query = query_of(response.headers["location"])
    assert query["code"] and query["state"] == "b"


def test_second_app_already_consented_signs_in_without_password_or_consent(http, make_client, make_user):
    user = make_user()
    client_b = make_client()
    sign_in(http, client_b, user, _CHALLENGE)  # consents to B
    http.cookies.clear()
    sign_in(http, make_client(first_party=True), user, _CHALLENGE)  # a new browser session via A
    response = get_authorize(http, authorize_params(client_b, _CHALLENGE, state="b"))
    assert response.headers["location"].startswith(client_b.redirect_uri)
    assert query_of(response.headers["location"])["code"]


def test_prompt_login_forces_sign_in_and_auth_time_is_the_new_sign_in(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    first = id_token_claims(http, tokens_for(http, client, user)["id_token"], client.client_id)
    time.sleep(max(0.0, first["auth_time"] + 1 - time.time()))  # into the second after the sign-in's

    # Single sign-on: auth_time stays the time of the sign-in, not of the issue.
    sso = id_token_claims(http, tokens_for(http, client, user)["id_token"], client.client_id)
    assert sso["auth_time"] == first["auth_time"]
    assert sso["iat"] > sso["auth_time"]

    verifier, challenge = pkce_pair()
    response = get_authorize(http, authorize_params(client, challenge, prompt="login"))
    assert location_path(response) == "/login", "prompt=login must not be satisfied by the session"
    response = submit_login(http, response.headers["location"], user.email, PASSWORD)
    assert response.headers["location"].startswith(client.redirect_uri)
    code = query_of(response.headers["location"])["code"]
    fresh = id_token_claims(http, exchange(http, client, code, verifier).json()["id_token"], client.client_id)
    assert fresh["auth_time"] > first["auth_time"]
    assert fresh["auth_time"] >= sso["iat"]


def test_max_age_zero_forces_sign_in_once(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    first_party_session(http, make_client, user)
    response = get_authorize(http, authorize_params(client, _CHALLENGE, max_age="0", state="m0"))
    assert location_path(response) == "/login"
    response = submit_login(http, response.headers["location"], user.email, PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"].startswith(client.redirect_uri), "max_age=0 must not loop back to sign-in"
    query = query_of(response.headers["location"])
    assert query["code"] and query["state"] == "m0"


def test_large_max_age_reuses_session(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    first_party_session(http, make_client, user)
    response = get_authorize(http, authorize_params(client, _CHALLENGE, max_age="3600"))
    assert response.headers["location"].startswith(client.redirect_uri)
    assert query_of(response.headers["location"])["code"]


def test_max_age_older_session_forces_sign_in(http, make_client, make_user, ctx):
    from idp.storage import BrowserSession

    client = make_client(first_party=True)
    user = make_user()
    first_party_session(http, make_client, user)
    with ctx.db.begin() as db:
        db.execute(update(BrowserSession).where(BrowserSession.user_id == user.id).values(auth_time=now() - 600))
    response = get_authorize(http, authorize_params(client, _CHALLENGE, max_age="300"))
    assert location_path(response) == "/login"


def test_prompt_none_without_session_is_login_required(http, make_client):
    client = make_client(first_party=True)
    response = get_authorize(http, authorize_params(client, _CHALLENGE, prompt="none", state="pn"))
    assert_error_redirect(response, client.redirect_uri, "login_required", "pn")


def test_prompt_none_with_session_but_no_consent_is_consent_required(http, make_client, make_user):
    user = make_user()
    first_party_session(http, make_client, user)
    client = make_client()
    response = get_authorize(http, authorize_params(client, _CHALLENGE, prompt="none", state="pc"))
    assert_error_redirect(response, client.redirect_uri, "consent_required", "pc")


def test_prompt_none_with_session_and_consent_gives_code(http, make_client, make_user):
    user = make_user()
    client = make_client()
    sign_in(http, client, user, _CHALLENGE)
    response = get_authorize(http, authorize_params(client, _CHALLENGE, prompt="none", state="ok"))
    assert response.headers["location"].startswith(client.redirect_uri)
    query = query_of(response.headers["location"])
    assert query["code"] and query["state"] == "ok" and query["iss"] == TEST_ISSUER


def test_prompt_consent_asks_again_even_when_remembered(http, make_client, make_user):
    user = make_user()
    client = make_client()
    sign_in(http, client, user, _CHALLENGE)
    response = get_authorize(http, authorize_params(client, _CHALLENGE, prompt="consent"))
    assert location_path(response) == "/consent"


# --- consent ---------------------------------------------------------------------------------


def test_consent_shown_for_third_party_client(http, make_client, make_user):
    user = make_user()
    client = make_client()
    response = get_authorize(http, authorize_params(client, _CHALLENGE))
    response = submit_login(http, response.headers["location"], user.email, PASSWORD)
    assert location_path(response) == "/consent"
    page = http.get(path_of(response.headers["location"]))
    assert page.status_code == 200
    assert 'name="decision" value="allow"' in page.text and 'name="decision" value="deny"' in page.text
    assert "csrf_token" in hidden_fields(page.text)


def test_consent_skipped_for_first_party_client(http, make_client, make_user):
    user = make_user()
    client = make_client(first_party=True)
    response = get_authorize(http, authorize_params(client, _CHALLENGE))
    response = submit_login(http, response.headers["location"], user.email, PASSWORD)
    assert response.headers["location"].startswith(client.redirect_uri)
    assert query_of(response.headers["location"])["code"]


def test_consent_remembered_per_client_and_scopes(http, make_client, make_user):
    user = make_user()
    client = make_client()
    sign_in(http, client, user, _CHALLENGE, scope="openid email")

    same = get_authorize(http, authorize_params(client, _CHALLENGE, scope="openid email"))
    assert same.headers["location"].startswith(client.redirect_uri)
    narrower = get_authorize(http, authorize_params(client, _CHALLENGE, scope="openid"))
    assert narrower.headers["location"].startswith(client.redirect_uri)

    wider = get_authorize(http, authorize_params(client, _CHALLENGE, scope="openid email phone"))
    assert location_path(wider) == "/consent"

    other_client = make_client()
    other = get_authorize(http, authorize_params(other_client, _CHALLENGE, scope="openid email"))
    assert location_path(other) == "/consent", "consent is per client"


def test_consent_deny_is_access_denied(http, make_client, make_user, ctx):
    user = make_user()
    client = make_client()
    response = get_authorize(http, authorize_params(client, _CHALLENGE, state="deny-me"))
    response = submit_login(http, response.headers["location"], user.email, PASSWORD)
    response = submit_consent(http, response.headers["location"], decision="deny")
    assert_error_redirect(response, client.redirect_uri, "access_denied", "deny-me")
    assert code_count(ctx, client.client_id) == 0
    again = get_authorize(http, authorize_params(client, _CHALLENGE))
    assert location_path(again) == "/consent", "a refusal is not remembered as consent"


@pytest.mark.parametrize("token", [None, "wrong"])
def test_consent_post_without_valid_csrf_issues_no_code(http, make_client, make_user, ctx, token):
    user = make_user()
    client = make_client()
    response = get_authorize(http, authorize_params(client, _CHALLENGE))
    response = submit_login(http, response.headers["location"], user.email, PASSWORD)
    consent_location = response.headers["location"]
    fields = hidden_fields(http.get(path_of(consent_location)).text)
    fields.pop("csrf_token")
    if token is not None:
        fields["csrf_token"] = token
    response = http.post("/consent", data={**fields, "decision": "allow"})
    assert response.status_code == 400
    assert "location" not in response.headers
    assert 'role="alert"' in response.text
    assert code_count(ctx, client.client_id) == 0
    # Nor was the consent remembered.
    assert location_path(get_authorize(http, authorize_params(client, _CHALLENGE))) == "/consent"


# --- hints -----------------------------------------------------------------------------------


def test_login_hint_prefills_username(http, make_client):
    client = make_client()
    response = get_authorize(http, authorize_params(client, _CHALLENGE, login_hint="hinted@example.com"))
    page = http.get(path_of(response.headers["location"]))
    assert re.search(r'<input[^>]*name="username"[^>]*value="hinted@example.com"', page.text), page.text


def test_id_token_hint_for_another_user_forces_sign_in(http, make_client, make_user):
    client = make_client(first_party=True)
    alice, bob = make_user(), make_user()
    alice_token = tokens_for(http, client, alice)["id_token"]
    tokens_for(http, client, bob, prompt="login")  # the browser is now Bob's

    same = get_authorize(
        http, authorize_params(client, _CHALLENGE, id_token_hint=tokens_for(http, client, bob)["id_token"])
    )
    assert same.headers["location"].startswith(client.redirect_uri), "a hint naming the signed-in person is fine"

    response = get_authorize(http, authorize_params(client, _CHALLENGE, id_token_hint=alice_token))
    assert location_path(response) == "/login"
    response = get_authorize(
        http, authorize_params(client, _CHALLENGE, id_token_hint=alice_token, prompt="none", state="h")
    )
    assert_error_redirect(response, client.redirect_uri, "login_required", "h")


def test_id_token_hint_then_signing_in_as_someone_else_is_login_required(http, make_client, make_user):
    client = make_client(first_party=True)
    alice, bob = make_user(), make_user()
    alice_token = tokens_for(http, client, alice)["id_token"]
    http.cookies.clear()
    response = get_authorize(http, authorize_params(client, _CHALLENGE, id_token_hint=alice_token, state="h2"))
    response = submit_login(http, response.headers["location"], bob.email, PASSWORD)
    assert_error_redirect(response, client.redirect_uri, "login_required", "h2")


# --- the session cookie ----------------------------------------------------------------------


def _session_set_cookie(response, name: str) -> str:  # type: ignore[no-untyped-def]
    cookies = [c for c in response.headers.get_list("set-cookie") if c.startswith(name + "=")]
    assert len(cookies) == 1, response.headers.get_list("set-cookie")
    return cookies[0]


def _cookie_attributes(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        out[key.lower()] = value
    return out


def test_session_cookie_attributes_on_http(http, make_user):
    user = make_user()
    page = http.get("/login")
    response = http.post("/login", data={**hidden_fields(page.text), "username": user.email, "password": PASSWORD})
    assert response.status_code == 303
    attributes = _cookie_attributes(_session_set_cookie(response, "idp_session"))
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "lax"
    assert attributes["path"] == "/"
    assert "secure" not in attributes


def test_session_cookie_is_secure_with_host_prefix_on_https(base_environ, make_user):
    app = create_app(make_settings(base_environ, IDP_ISSUER="https://testserver"))
    try:
        with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
            user = make_user()
            page = client.get("/login")
            assert "__Host-idp_csrf=" in page.headers["set-cookie"]
            response = client.post(
                "/login", data={**hidden_fields(page.text), "username": user.email, "password": PASSWORD}
            )
            assert response.status_code == 303, response.text
            attributes = _cookie_attributes(_session_set_cookie(response, "__Host-idp_session"))
            assert "secure" in attributes and "httponly" in attributes
            assert attributes["samesite"].lower() == "lax" and attributes["path"] == "/"
            assert "domain" not in attributes
            assert client.get("/account").status_code == 200
    finally:
        app.state.ctx.close()


# --- the ID token ----------------------------------------------------------------------------


def test_id_token_with_openid_only_has_no_user_claims(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user(name="Ada Lovelace", phone=f"+1415{secrets.randbelow(8_000_000) + 2_000_000}")
    claims = id_token_claims(http, tokens_for(http, client, user, scope="openid")["id_token"], client.client_id)
    assert claims["sub"] == user.id
    for claim in ("email", "email_verified", "name", "updated_at", "phone_number", "phone_number_verified"):
        assert claim not in claims


def test_id_token_with_email_scope_has_email_only(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user(name="Ada Lovelace")
    claims = id_token_claims(http, tokens_for(http, client, user, scope="openid email")["id_token"], client.client_id)
    assert claims["email"] == user.email and claims["email_verified"] is True
    assert "name" not in claims and "phone_number" not in claims


def test_id_token_core_claims(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    verifier, challenge = pkce_pair()
    callback = sign_in(http, client, user, challenge, nonce="nonce-xyz")
    tokens = exchange(http, client, callback["code"], verifier).json()
    token = tokens["id_token"]
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = id_token_claims(http, token, client.client_id)
    assert claims["nonce"] == "nonce-xyz"
    assert claims["sid"]
    assert claims["amr"] == ["pwd"]
    assert claims["azp"] == client.client_id
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]
    digest = hashlib.sha256(tokens["access_token"].encode("ascii")).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def test_id_token_without_nonce_has_no_nonce(http, make_client, make_user):
    client = make_client(first_party=True)
    claims = id_token_claims(http, tokens_for(http, client, make_user(), nonce="")["id_token"], client.client_id)
    assert "nonce" not in claims


# --- pending requests ------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/login", "/consent"])
def test_unknown_pending_request_shows_error_page(http, page):
    assert_error_page(http.get(page, params={"request": "no-such-request"}))


@pytest.mark.parametrize("page", ["/login", "/consent"])
def test_expired_pending_request_shows_error_page(http, make_client, ctx, page):
    client = make_client()
    response = get_authorize(http, authorize_params(client, _CHALLENGE))
    request_id = query_of(response.headers["location"])["request"]
    assert http.get(page, params={"request": request_id}).status_code in (200, 303)
    with ctx.db.begin() as db:
        db.execute(
            update(AuthorizationRequest).where(AuthorizationRequest.id == request_id).values(expires_at=now() - 1)
        )
    assert_error_page(http.get(page, params={"request": request_id}))


def test_expired_pending_request_cannot_be_completed_by_signing_in(http, make_client, make_user, ctx):
    client = make_client(first_party=True)
    user = make_user()
    response = get_authorize(http, authorize_params(client, _CHALLENGE))
    login_location = response.headers["location"]
    fields = hidden_fields(http.get(path_of(login_location)).text)
    request_id = fields["request"]
    with ctx.db.begin() as db:
        db.execute(
            update(AuthorizationRequest).where(AuthorizationRequest.id == request_id).values(expires_at=now() - 1)
        )
    response = http.post("/login", data={**fields, "username": user.email, "password": PASSWORD})
    assert_error_page(response)
    assert code_count(ctx, client.client_id) == 0


@pytest.mark.parametrize(
    "overrides", [{"prompt": "login consent"}, {"max_age": "0", "prompt": "consent"}], ids=["prompt=login", "max_age=0"]
)
def test_consent_page_cannot_skip_a_forced_sign_in(http, make_client, make_user, ctx, overrides):
    """Going straight to /consent with the pending request must not bypass the fresh sign-in it needs."""
    user = make_user()
    client = make_client()
    sign_in(http, client, user, _CHALLENGE)
    response = get_authorize(http, authorize_params(client, _CHALLENGE, **overrides))
    assert location_path(response) == "/login"
    request_id = query_of(response.headers["location"])["request"]
    before = code_count(ctx, client.client_id)
    page = http.get("/consent", params={"request": request_id})
    if page.status_code == 200:
        page = http.post("/consent", data={**hidden_fields(page.text), "decision": "allow"})
    assert location_path(page) == "/login"
    assert code_count(ctx, client.client_id) == before


def test_request_ended_by_an_error_after_sign_in_cannot_be_consented_later(http, make_client, make_user, ctx):
    """A request answered with login_required is over: its consent page must not still give a code."""
    client = make_client()
    alice, bob = make_user(), make_user()
    alice_token = tokens_for(http, client, alice)["id_token"]
    http.cookies.clear()
    response = get_authorize(http, authorize_params(client, _CHALLENGE, id_token_hint=alice_token, state="h3"))
    request_id = query_of(response.headers["location"])["request"]
    response = submit_login(http, response.headers["location"], bob.email, PASSWORD)
    assert_error_redirect(response, client.redirect_uri, "login_required", "h3")
    before = code_count(ctx, client.client_id)
    page = http.get("/consent", params={"request": request_id})
    assert_error_page(page)
    assert code_count(ctx, client.client_id) == before


# --- native apps on a loopback port (RFC 8252 §7.3) --------------------------------------------


@pytest.mark.parametrize(
    "registered", ["http://127.0.0.1/callback", "http://127.0.0.1:8400/callback", "http://[::1]/callback"]
)
def test_a_loopback_ip_redirect_uri_takes_any_port(http, make_client, make_user, registered):
    """RFC 8252 §7.3: the server MUST allow any port for a loopback IP redirect URI; the code is
    then bound to the URI with the port the app used."""
    client = make_client(redirect_uris=[registered], first_party=True, auth_method="none")
    host = "[::1]" if "[::1]" in registered else "127.0.0.1"
    used = f"http://{host}:53123/callback"
    verifier, challenge = pkce_pair()
    callback = sign_in(http, replace(client, redirect_uri=used), make_user(), challenge, state="st")
    assert callback["state"] == "st"
    response = exchange(http, replace(client, redirect_uri=registered), callback["code"], verifier)
    assert response.json()["error"] == "invalid_grant"
    response = exchange(http, replace(client, redirect_uri=used), callback["code"], verifier)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "presented",
    [
        "http://127.0.0.1:53123/other",
        "http://127.0.0.1:53123/callback?x=1",
        "http://127.0.0.1:53123/callback#frag",
        "http://127.0.0.1:99999/callback",
        "http://127.0.0.1:53123@evil.example/callback",
        "https://127.0.0.1:53123/callback",
        "http://127.0.0.2:53123/callback",
        "http://localhost:53123/callback",
    ],
)
def test_only_the_port_of_a_loopback_redirect_uri_may_differ(http, make_client, presented):
    client = make_client(redirect_uris=["http://127.0.0.1/callback", "http://localhost/callback"], auth_method="none")
    assert_error_page(get_authorize(http, authorize_params(replace(client, redirect_uri=presented), _CHALLENGE)))


def test_other_redirect_uris_take_no_other_port(http, make_client):
    client = make_client(redirect_uris=["https://rp.example/cb", "http://localhost:8400/callback"])
    for presented in ("https://rp.example:8443/cb", "http://localhost:8401/callback"):
        assert_error_page(get_authorize(http, authorize_params(replace(client, redirect_uri=presented), _CHALLENGE)))
