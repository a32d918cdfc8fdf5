"""The UserInfo endpoint: OIDC Core §5.3, bearer tokens per RFC 6750."""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from idp.accounts.users import disable_user

from .flows import tokens_for

ISSUER = "http://testserver"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge_params(response: httpx.Response) -> dict[str, str]:
    """The auth-params of a ``WWW-Authenticate: Bearer ...`` challenge (RFC 6750 §3)."""
    header = response.headers["www-authenticate"]
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            params[name] = value.strip('"')
    return params


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert challenge_params(response).get("error") == "invalid_token", response.headers


def random_phone() -> str:
    return f"+1650253{random.randrange(10_000):04d}"


@pytest.fixture
def person(make_user):  # type: ignore[no-untyped-def]
    for _ in range(20):
        try:
            return make_user(name="Grace Hopper", phone=random_phone())
        except ValueError:
            continue
    raise AssertionError("could not make a person with a free phone number")


@pytest.fixture
def client(make_client):  # type: ignore[no-untyped-def]
    return make_client()


@pytest.fixture
def access_token(http, client, person) -> str:  # type: ignore[no-untyped-def]
    return tokens_for(http, client, person, scope="openid profile email phone")["access_token"]


def own_token(ctx, *, key: RSAKey | None = None, **overrides: Any) -> str:  # type: ignore[no-untyped-def]
    """An access token shaped like ours, signed by ``key`` or by the provider's active key."""
    if key is None:
        active = ctx.keyring.snapshot().active
        key, kid = active.key, active.kid
    else:
        kid = key.kid
    stamp = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "nobody",
        "aud": ISSUER,
        "client_id": "someone",
        "scope": "openid email",
        "jti": secrets.token_urlsafe(16),
        "iat": stamp,
        "exp": stamp + 300,
    }
    claims.update(overrides)
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, key)


# -- how the token is sent ---------------------------------------------------------------------


def test_get_with_bearer_header(http, access_token, person):
    response = http.get("/userinfo", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["sub"] == person.id


def test_post_with_bearer_header(http, access_token, person):
    response = http.post("/userinfo", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == person.id


def test_post_with_token_in_form_body(http, access_token, person):
    response = http.post("/userinfo", data={"access_token": access_token})
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == person.id


def test_token_in_header_and_body_is_invalid_request(http, access_token):
    response = http.post("/userinfo", headers=bearer(access_token), data={"access_token": access_token})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


def test_token_in_query_is_not_accepted(http, access_token):
    """RFC 9700 §2.5 / RFC 6750 §2.3: never in the URI."""
    response = http.get("/userinfo", params={"access_token": access_token})
    assert response.status_code == 401
    assert "error" not in challenge_params(response)


# -- claims by scope ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("openid", {"sub"}),
        ("openid email", {"sub", "email", "email_verified"}),
        ("openid profile", {"sub", "name", "updated_at"}),
        ("openid phone", {"sub", "phone_number", "phone_number_verified"}),
    ],
)
def test_claims_follow_the_scope(http, client, person, scope, expected):
    token = tokens_for(http, client, person, scope=scope)["access_token"]
    response = http.get("/userinfo", headers=bearer(token))
    assert response.status_code == 200, response.text
    claims = response.json()
    assert set(claims) == expected
    assert claims["sub"] == person.id
    if "email" in expected:
        assert claims["email"] == person.email and claims["email_verified"] is True
    if "name" in expected:
        assert claims["name"] == "Grace Hopper"
    if "phone_number" in expected:
        assert claims["phone_number"].startswith("+1650253")


# -- refusals ----------------------------------------------------------------------------------


def test_no_token_is_401_without_an_error_code(http):
    """RFC 6750 §3.1: a request with no authentication information gets no error code."""
    for response in (http.get("/userinfo"), http.post("/userinfo")):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "error" not in challenge_params(response)


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "x" * 9000])
def test_garbage_token_is_invalid_token(http, garbage):
    assert_invalid_token(http.get("/userinfo", headers=bearer(garbage)))


def test_expired_token_is_invalid_token(http, ctx, person):
    stamp = int(time.time())
    token = own_token(ctx, sub=person.id, iat=stamp - 1000, exp=stamp - 100)
    assert_invalid_token(http.get("/userinfo", headers=bearer(token)))


def test_tampered_token_is_invalid_token(http, access_token):
    header, payload, signature = access_token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert_invalid_token(http.get("/userinfo", headers=bearer(f"{header}.{payload}.{flipped}")))


def test_id_token_is_not_an_access_token(http, client, person):
    tokens = tokens_for(http, client, person, scope="openid email")
    assert_invalid_token(http.get("/userinfo", headers=bearer(tokens["id_token"])))


def test_token_signed_by_an_unpublished_key_is_refused(http, ctx, person):
    baseline = own_token(ctx, sub=person.id)
    assert http.get("/userinfo", headers=bearer(baseline)).status_code == 200
    stranger = RSAKey.generate_key(2048, auto_kid=True)
    forged = own_token(ctx, key=stranger, sub=person.id)
    assert_invalid_token(http.get("/userinfo", headers=bearer(forged)))


def test_token_signed_by_an_unpublished_key_claiming_a_published_kid_is_refused(http, ctx, person):
    stranger = RSAKey.generate_key(2048)
    stamp = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": person.id,
        "aud": ISSUER,
        "client_id": "x",
        "scope": "openid",
        "jti": secrets.token_urlsafe(8),
        "iat": stamp,
        "exp": stamp + 300,
    }
    kid = ctx.keyring.snapshot().active.kid
    forged = jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, stranger)
    assert_invalid_token(http.get("/userinfo", headers=bearer(forged)))


def test_token_from_another_issuer_is_refused(http, ctx, person):
    token = own_token(ctx, sub=person.id, iss="https://evil.example")
    assert_invalid_token(http.get("/userinfo", headers=bearer(token)))


def test_client_credentials_token_is_insufficient_scope(http, make_client):
    service = make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read")
    token = http.post("/token", data={"grant_type": "client_credentials"}, auth=service.auth).json()["access_token"]
    response = http.get("/userinfo", headers=bearer(token))
    assert response.status_code == 403, response.text
    assert challenge_params(response)["error"] == "insufficient_scope"
    assert response.json()["error"] == "insufficient_scope"


def test_token_of_a_disabled_person_is_refused(http, ctx, access_token, person):
    # One token from a real grant, one minted outside any grant: both depend on the person.
    loose = own_token(ctx, sub=person.id)
    assert http.get("/userinfo", headers=bearer(access_token)).status_code == 200
    assert http.get("/userinfo", headers=bearer(loose)).status_code == 200
    with ctx.db.begin() as db:
        disable_user(db, person.id)
    assert_invalid_token(http.get("/userinfo", headers=bearer(access_token)))
    assert_invalid_token(http.get("/userinfo", headers=bearer(loose)))
