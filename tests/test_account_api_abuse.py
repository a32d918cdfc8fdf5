"""The account JSON API under attack: forged and misplaced tokens, hostile bodies, CORS, rate limits,
and errors that must stay RFC 9457 problems whatever fails."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from starlette.testclient import TestClient

from idp.accounts.users import create_user
from idp.app import create_app
from idp.migrate import upgrade
from idp.oauth.clients import create_client

from . import flows
from .conftest import PASSWORD, TEST_ISSUER, make_settings
from .flows import RegisteredClient, tokens_for
from .test_account_api import Documented, assert_invalid_token, assert_problem, bearer
from .test_rate_limits import in_network, new_address, new_ipv6_network

EVIL_ORIGIN = "https://evil.example"


@pytest.fixture
def person(make_user):  # type: ignore[no-untyped-def]
    return make_user()


@pytest.fixture
def client(make_client):  # type: ignore[no-untyped-def]
    return make_client(first_party=True)


@pytest.fixture
def tokens(browsers, client, person) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return tokens_for(browsers(), client, person)


@pytest.fixture(scope="module")
def documented(app) -> Documented:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url=TEST_ISSUER) as http:
        return Documented(http.get("/api/account/openapi.json").json())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


# --- forged and misplaced tokens -----------------------------------------------------------------


def test_alg_none_with_the_real_kid_and_claims_is_401(http, tokens):
    header = pyjwt.get_unverified_header(tokens["access_token"])
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    token = forged({"alg": "none", "kid": header["kid"], "typ": "at+jwt"}, claims)
    assert_invalid_token(http.get("/api/account", headers=bearer(token)))


def test_hs256_signed_with_the_public_key_is_401(http, ctx, tokens):
    """The algorithm confusion attack: the published RSA key used as an HMAC secret."""
    header = pyjwt.get_unverified_header(tokens["access_token"])
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    public_pem = ctx.keyring.snapshot().active.key.as_pem(private=False)
    head = {"alg": "HS256", "kid": header["kid"], "typ": "at+jwt"}
    signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}".encode()
    token = forged(head, claims, hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    assert_invalid_token(http.get("/api/account", headers=bearer(token)))


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256", "kid": 5},
        {"alg": ["RS256"]},
        {"alg": "RS256", "crit": ["exp"]},
        {"alg": "RS256", "jwk": {"kty": "oct", "k": "AA"}},
        {"alg": "RSA-OAEP", "enc": "A128GCM"},
    ],
)
def test_hostile_token_headers_are_401_never_500(http, tokens, header):
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert_invalid_token(http.get("/api/account", headers=bearer(forged(header, claims, b"x" * 256))))


def test_a_refresh_token_is_not_an_access_token(http, tokens):
    assert_invalid_token(http.get("/api/account", headers=bearer(tokens["refresh_token"])))


def test_a_token_in_a_form_body_is_not_accepted(http, tokens):
    """RFC 6750 §2.2 is for form bodies, which this API never takes: no header, no access."""
    response = http.patch("/api/account", data={"access_token": tokens["access_token"], "name": "Eve"})
    assert_problem(response, 401, "invalid-token")
    assert response.headers["www-authenticate"] == 'Bearer realm="idp"'


def test_a_token_whose_session_signed_out_is_401(http, browsers, client, person):
    browser = browsers()
    issued = tokens_for(browser, client, person)
    assert http.get("/api/account", headers=bearer(issued["access_token"])).status_code == 200
    signed_out = browser.post("/logout", data={"id_token_hint": issued["id_token"]})
    assert signed_out.status_code in (200, 302, 303), signed_out.text
    assert_invalid_token(http.get("/api/account", headers=bearer(issued["access_token"])))


# --- CORS and caching ----------------------------------------------------------------------------


def test_no_cors_grant_for_a_foreign_origin(http, tokens):
    answer = http.get("/api/account", headers={**bearer(tokens["access_token"]), "Origin": EVIL_ORIGIN})
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    preflight = http.options(
        "/api/account",
        headers={
            "Origin": EVIL_ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    for response in (answer, preflight):
        assert not any(name.startswith("access-control-") for name in response.headers), response.headers


def test_every_personal_answer_is_no_store(http, tokens):
    headers = bearer(tokens["access_token"])
    for method, path in (("GET", "/api/account"), ("GET", "/api/account/sessions"), ("HEAD", "/api/account")):
        response = http.request(method, path, headers=headers)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"


# --- hostile bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": 1' + b"0" * 5000 + b"}",
        b'{"name": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
        b"\xef\xbb\xbf{}",
        b'{"name": "\xc0\xaf"}',
    ],
    ids=["a 5000-digit number", "objects nested 10000 deep", "a byte order mark", "an overlong UTF-8 sequence"],
)
def test_hostile_json_is_400(http, tokens, raw, documented):
    headers = {**bearer(tokens["access_token"]), "Content-Type": "application/json"}
    response = http.patch("/api/account", headers=headers, content=raw)
    assert_problem(response, 400, "malformed-body")
    documented.check(response, "/api/account", "patch")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/account/password", {"current_password": [], "password": {"a": 1}}),
        ("/api/account/email", {"email": 1e308, "current_password": True}),
        ("/api/account/phone", {"phone": None}),
        ("/api/account/phone/verify", {"code": 123456}),
        ("/api/account/password/set", {"code": ["1"], "password": False}),
    ],
)
def test_wrong_types_are_422_for_every_operation(http, tokens, path, body, documented):
    response = http.post(path, headers=bearer(tokens["access_token"]), json=body)
    problem = assert_problem(response, 422, "invalid-body")
    assert {error["pointer"] for error in problem["errors"]} == {f"/{name}" for name in body}
    documented.check(response, path, "post")


def test_a_nul_in_a_path_is_a_problem_too(http, tokens):
    response = http.delete("/api/account/sessions/%00", headers=bearer(tokens["access_token"]))
    assert_problem(response, 400, None)


# --- rate limits ---------------------------------------------------------------------------------


def test_password_change_tries_are_rate_limited(base_environ, make_user, make_client, documented):
    """A stolen token must not make the provider hash guesses of the current password without end.
    The budget is the sign-in one, which the sign-in that got the token spent one of."""
    settings = make_settings(base_environ, IDP_RATE_LIMITING="on", IDP_RATE_LIMIT_SIGN_IN="3/hour")
    limited = create_app(settings)
    person, client = make_user(), make_client(first_party=True)
    try:
        # An address of its own: with Redis the counts outlive this app, and other tests spend theirs.
        with TestClient(limited, base_url=TEST_ISSUER, follow_redirects=False, client=(new_address(), 50000)) as http:
            access = tokens_for(http, client, person)["access_token"]
            body = {"current_password": "not the password", "password": "a quite different passphrase 42"}
            answers = [http.post("/api/account/password", json=body, headers=bearer(access)) for _ in range(3)]
            assert [a.status_code for a in answers[:-1]] == [403, 403]
            refused = answers[-1]
            problem = assert_problem(refused, 429, "rate-limited")
            assert int(refused.headers["retry-after"]) > 0 and problem["retry_after"] > 0
            documented.check(refused, "/api/account/password", "post")
            right = http.post(
                "/api/account/password",
                json={"current_password": PASSWORD, "password": "a quite different passphrase 42"},
                headers=bearer(access),
            )
            assert_problem(right, 429, "rate-limited")
    finally:
        limited.state.ctx.close()


def test_password_change_tries_from_one_ipv6_64_share_a_budget(base_environ, make_user, make_client):
    """An IPv6 host holds a whole /64: a fresh address for each guess must not bring a fresh budget."""
    settings = make_settings(base_environ, IDP_RATE_LIMITING="on", IDP_RATE_LIMIT_SIGN_IN="3/hour")
    limited = create_app(settings)
    person, client, network = make_user(), make_client(first_party=True), new_ipv6_network()
    body = {"current_password": "not the password", "password": "a quite different passphrase 42"}
    try:
        peer = (in_network(network), 50000)
        with TestClient(limited, base_url=TEST_ISSUER, follow_redirects=False, client=peer) as http:
            access = tokens_for(http, client, person)["access_token"]  # the sign-in spends one
        answers = []
        for _ in range(3):
            with TestClient(limited, base_url=TEST_ISSUER, client=(in_network(network), 50000)) as http:
                answers.append(http.post("/api/account/password", json=body, headers=bearer(access)))
        assert [a.status_code for a in answers[:-1]] == [403, 403]
        assert_problem(answers[-1], 429, "rate-limited")
    finally:
        limited.state.ctx.close()


# --- failures stay problems ----------------------------------------------------------------------


def _token_on(app, http: TestClient) -> str:  # type: ignore[no-untyped-def]
    """An access token of a first-party client for a new person, all in ``app``'s own database."""
    ctx = app.state.ctx
    with ctx.db.begin() as db:
        user = create_user(db, email="broken@example.com", password=PASSWORD, verified=True)
        person = flows.TestUser(id=user.id, email=user.email, password=PASSWORD)
        made = create_client(
            db, ctx.secret_key, allow_http=True, name="App", redirect_uris=["https://rp.example/cb"], first_party=True
        )
        client = RegisteredClient(
            client_id=made.client.id, client_secret=made.secret, redirect_uri=made.client.redirect_uris[0]
        )
    return str(tokens_for(http, client, person)["access_token"])


def test_a_failing_database_is_a_503_problem(base_environ, tmp_path: Path, documented):
    """The app answers a database failure with its RFC 6749-shaped 503; under /api it is a problem."""
    url = f"sqlite:///{tmp_path / 'idp.db'}"
    upgrade(url)
    broken = create_app(make_settings(base_environ, IDP_DATABASE_URL=url))
    try:
        with TestClient(broken, base_url=TEST_ISSUER, follow_redirects=False) as http:
            access = _token_on(broken, http)
            assert http.get("/api/account", headers=bearer(access)).status_code == 200
            with sqlite3.connect(tmp_path / "idp.db") as raw:
                raw.execute("ALTER TABLE users RENAME TO users_gone")
            response = http.get("/api/account", headers=bearer(access))
            problem = assert_problem(response, 503, "temporarily-unavailable")
            assert response.headers["retry-after"] == "5" and problem["retry_after"] == 5
            assert "users" not in response.text and "Traceback" not in response.text
            documented.check(response, "/api/account", "get")
    finally:
        broken.state.ctx.close()


def test_the_openapi_document_says_only_first_party_tokens_are_taken(http):
    """It once told integrators that a token of any client would do, which the API refuses (403)."""
    document = http.get("/api/account/openapi.json").json()
    for text in (document["info"]["description"], document["components"]["securitySchemes"]["bearer"]["description"]):
        assert "first-party" in text and "any client" not in text
