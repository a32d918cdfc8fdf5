"""An attacker's requests to the protocol endpoints, and the RFC rules they test.

What the endpoint modules' own tests already cover (redirect_uri matching, PKCE downgrade, code
injection, repeated parameters, cross-client revocation ...) is not repeated here.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt

from idp.security.digests import token_digest
from idp.sso import end_session
from idp.storage import AuthorizationCode

from .flows import (
    authorize_params,
    exchange,
    hidden_fields,
    pkce_pair,
    query_of,
    sign_in,
    submit_login,
    tokens_for,
)


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified: only to read what the provider put in it."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def authorize(http: httpx.Client, pairs: list[tuple[str, str]]) -> httpx.Response:
    """GET /authorize with exactly these pairs, empty values included."""
    return http.get("/authorize?" + urlencode(pairs))


def redirect_query(response: httpx.Response, redirect_uri: str) -> dict[str, str]:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    return query_of(location)


def sign_out(http: httpx.Client) -> None:
    """Sign out on the confirmation page, as a person would."""
    page = http.get("/logout")
    assert page.status_code == 200, page.text
    response = http.post("/logout", data={**hidden_fields(page.text), "decision": "logout"})
    assert response.status_code == 200, response.text


def assert_token_error(response: httpx.Response, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers.get("cache-control") == "no-store"


# --- /authorize: max_age --------------------------------------------------------------------------


@pytest.mark.parametrize("max_age", ["²", "٣", "１０", "1_0", " 10"])
def test_max_age_of_anything_but_ascii_digits_is_invalid_request_not_500(http, make_client, max_age):
    """OIDC Core §3.1.2.1: max_age is a number of seconds; "²" passed str.isdigit() and int() then raised."""
    client = make_client()
    params = authorize_params(client, pkce_pair()[1], state="st", max_age=max_age)
    query = redirect_query(authorize(http, list(params.items())), client.redirect_uri)
    assert query["error"] == "invalid_request"
    assert query["state"] == "st"


# --- /authorize: a parameter sent without a value is omitted (RFC 6749 §3.1) ----------------------


def test_empty_state_is_not_echoed(http, make_client):
    client = make_client()
    params = authorize_params(client, pkce_pair()[1], response_type="token")
    pairs = [*((k, v) for k, v in params.items() if k != "state"), ("state", "")]
    query = redirect_query(authorize(http, pairs), client.redirect_uri)
    assert query["error"] == "unsupported_response_type"
    assert "state" not in query


@pytest.mark.parametrize("name", ["response_mode", "request", "request_uri", "max_age", "prompt", "login_hint"])
def test_empty_optional_parameter_is_as_if_omitted(http, make_client, name):
    client = make_client()
    pairs = [*authorize_params(client, pkce_pair()[1]).items(), (name, "")]
    response = authorize(http, pairs)
    assert response.status_code == 303, response.text
    assert urlsplit(response.headers["location"]).path == "/login", response.headers["location"]


def test_empty_nonce_puts_no_nonce_in_the_id_token(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge)
    pairs = [*((k, v) for k, v in params.items() if k != "nonce"), ("nonce", "")]
    response = authorize(http, pairs)
    response = submit_login(http, response.headers["location"], user.email, user.password or "")
    code = redirect_query(response, client.redirect_uri)["code"]
    tokens = exchange(http, client, code, verifier).json()
    assert "nonce" not in claims_of(tokens["id_token"])


def test_empty_client_id_or_redirect_uri_is_still_an_error_page(http, make_client):
    client = make_client()
    params = authorize_params(client, pkce_pair()[1])
    for name in ("client_id", "redirect_uri"):
        pairs = [*((k, v) for k, v in params.items() if k != name), (name, "")]
        response = authorize(http, pairs)
        assert response.status_code == 400, response.text
        assert "location" not in response.headers


# --- /authorize: id_token_hint -------------------------------------------------------------------


def _signed(ctx, claims: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    active = ctx.keyring.snapshot().active
    return jwt.encode({"alg": "RS256", "kid": active.kid, "typ": "JWT"}, claims, active.key)


def test_id_token_hint_naming_another_issuer_is_invalid_request(http, ctx, make_client, make_user):
    client = make_client(first_party=True)
    tokens = tokens_for(http, client, make_user())
    hint = _signed(ctx, {**claims_of(tokens["id_token"]), "iss": "https://other.example"})
    params = authorize_params(client, pkce_pair()[1], state="st", id_token_hint=hint, prompt="none")
    query = redirect_query(authorize(http, list(params.items())), client.redirect_uri)
    assert query["error"] == "invalid_request"
    assert "code" not in query


def test_expired_id_token_hint_of_the_signed_in_person_still_works(http, ctx, make_client, make_user):
    """OIDC Core §3.1.2.1: the OP should accept an expired ID token as a hint."""
    client = make_client(first_party=True)
    tokens = tokens_for(http, client, make_user())
    issued = int(time.time()) - 7200
    hint = _signed(ctx, {**claims_of(tokens["id_token"]), "iat": issued, "exp": issued + 300})
    params = authorize_params(client, pkce_pair()[1], state="st", id_token_hint=hint, prompt="none")
    query = redirect_query(authorize(http, list(params.items())), client.redirect_uri)
    assert query["code"] and query["state"] == "st"


# --- /token: a code outlives no sign-in session ---------------------------------------------------


def test_code_issued_before_sign_out_is_refused_after_it(http, make_client, make_user):
    """Ending a session revokes the grants made in it; a code of that session must not make a new one."""
    client = make_client(first_party=True)
    verifier, challenge = pkce_pair()
    callback = sign_in(http, client, make_user(), challenge)
    sign_out(http)
    response = exchange(http, client, callback["code"], verifier)
    assert_token_error(response, "invalid_grant")


def test_code_of_a_session_ended_from_another_browser_is_refused(browsers, make_client, make_user):
    client = make_client(first_party=True)
    person = make_user()
    stolen_from, owner = browsers(), browsers()
    verifier, challenge = pkce_pair()
    callback = sign_in(stolen_from, client, person, challenge)
    tokens_for(owner, client, person)
    page = owner.get("/account")
    ended = owner.post("/account/sessions/end-others", data={"csrf_token": hidden_fields(page.text)["csrf_token"]})
    assert ended.status_code == 303, ended.text
    response = exchange(stolen_from, client, callback["code"], verifier)
    assert_token_error(response, "invalid_grant")


def test_sign_out_racing_the_exchange_leaves_no_live_token(http, ctx, make_client, make_user):
    """The exchange locks the session row: a sign-out still uncommitted makes it wait, then refuse.

    Without the lock the exchange read the session as live and made a grant the sign-out, already
    past its revoking UPDATE, never saw. SQLite writes one transaction at a time, so this race
    needs PostgreSQL's row locks to exist at all.
    """
    if not ctx.settings.database_url.startswith("postgresql"):
        pytest.skip("the race needs concurrent writers: run with IDP_TEST_DATABASE_URL on PostgreSQL")
    client = make_client(first_party=True)
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, make_user(), challenge)["code"]
    answers: list[httpx.Response] = []
    with ctx.db() as db:
        session_id = db.get(AuthorizationCode, token_digest(code)).session_id
        end_session(db, session_id)
        exchanging = threading.Thread(target=lambda: answers.append(exchange(http, client, code, verifier)))
        exchanging.start()
        exchanging.join(timeout=1.0)
        db.commit()
    exchanging.join(timeout=30)
    (response,) = answers
    if response.status_code == 200:
        access_token = response.json()["access_token"]
        assert http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"}).status_code == 401
    else:
        assert_token_error(response, "invalid_grant")


def test_code_of_a_live_session_still_works_after_another_browser_signs_out(browsers, make_client, make_user):
    client = make_client(first_party=True)
    person = make_user()
    first, second = browsers(), browsers()
    verifier, challenge = pkce_pair()
    callback = sign_in(first, client, person, challenge)
    tokens_for(second, client, person)
    sign_out(second)
    assert exchange(first, client, callback["code"], verifier).status_code == 200


# --- /token: a parameter sent without a value is omitted (RFC 6749 §3.2) --------------------------


def test_empty_code_verifier_counts_as_none(http, make_client, make_user):
    client = make_client(first_party=True)
    user = make_user()
    with_challenge = pkce_pair()
    callback = sign_in(http, client, user, with_challenge[1])
    assert_token_error(exchange(http, client, callback["code"], None, code_verifier=""), "invalid_grant")
    assert exchange(http, client, callback["code"], with_challenge[0]).status_code == 200
    callback = sign_in(http, client, user, None)
    assert exchange(http, client, callback["code"], None, code_verifier="").status_code == 200


def test_refresh_with_empty_scope_keeps_the_granted_scope(http, make_client, make_user):
    client = make_client(first_party=True)
    tokens = tokens_for(http, client, make_user())
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": ""}
    response = http.post("/token", data=data, auth=client.auth)
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == set(tokens["scope"].split())


def test_client_credentials_with_empty_scope_is_as_if_omitted(http, make_client):
    service = make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read api.write")
    data = {"grant_type": "client_credentials", "scope": ""}
    response = http.post("/token", data=data, auth=service.auth)
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"api.read", "api.write"}


def test_basic_with_an_empty_client_secret_field_is_basic_alone(http, make_client):
    service = make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read")
    data = {"grant_type": "client_credentials", "client_secret": ""}
    assert http.post("/token", data=data, auth=service.auth).status_code == 200


# --- client authentication at /revoke and /introspect ---------------------------------------------


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect"])
@pytest.mark.parametrize(
    "extra, basic",
    [
        ({"client_secret": "x"}, True),
        ({"client_assertion": "a.b.c", "client_assertion_type": ASSERTION_TYPE}, True),
        ({"client_secret": "x", "client_assertion": "a.b.c", "client_assertion_type": ASSERTION_TYPE}, False),
    ],
    ids=["basic+post", "basic+jwt", "post+jwt"],
)
def test_two_client_authentication_methods_at_once_are_refused(http, make_client, path, extra, basic):
    """RFC 6749 §2.3: the client MUST NOT use more than one authentication method in a request."""
    service = make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read")
    data = {"grant_type": "client_credentials", "token": "x", "client_id": service.client_id, **extra}
    response = http.post(path, data=data, auth=service.auth if basic else None)
    assert_token_error(response, "invalid_request")


def test_basic_scheme_without_credentials_is_challenged(http):
    """RFC 6749 §5.2: a client that tried the Authorization header gets 401 with WWW-Authenticate."""
    response = http.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic"})
    assert_token_error(response, "invalid_client", status=401)
    assert response.headers["www-authenticate"].lower().startswith("basic")


# --- methods --------------------------------------------------------------------------------------

ENDPOINTS = [
    "/authorize",
    "/token",
    "/revoke",
    "/introspect",
    "/userinfo",
    "/logout",
    "/consent",
    "/login",
    "/jwks.json",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_other_methods_are_405(http, path, method):
    response = http.request(method, path)
    assert response.status_code == 405, response.text
    assert "allow" in response.headers


@pytest.mark.parametrize(
    "path", ["/authorize", "/userinfo", "/logout", "/jwks.json", "/.well-known/openid-configuration"]
)
def test_head_is_answered_without_a_server_error(http, path):
    assert http.head(path).status_code < 500


@pytest.mark.parametrize("path", ["/revoke", "/introspect"])
def test_an_empty_token_is_a_missing_token(http, make_client, path):
    """RFC 7009 §2.1 and RFC 7662 §2.1: token is required; sent without a value it is omitted (RFC 6749 §3.2)."""
    service = make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read")
    assert_token_error(http.post(path, data={"token": ""}, auth=service.auth), "invalid_request")


def test_the_registered_redirect_uris_query_is_kept_as_registered(http, make_client):
    """RFC 6749 §3.1.2: the query of the registered URI MUST be retained when parameters are added."""
    registered = "https://rp.example/cb?flag&space=a%20b"
    client = make_client(redirect_uris=[registered])
    params = authorize_params(client, pkce_pair()[1], state="st", prompt="none")
    params["redirect_uri"] = registered
    location = authorize(http, list(params.items())).headers["location"]
    assert location.startswith(registered + "&"), location
    assert query_of(location)["error"] == "login_required"
