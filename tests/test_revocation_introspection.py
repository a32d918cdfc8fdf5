"""Token revocation (RFC 7009) and token introspection (RFC 7662)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from sqlalchemy import select, update

from idp.storage import Grant, RefreshToken

from .flows import tokens_for

ISSUER = "http://testserver"
INACTIVE = {"active": False}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def userinfo_status(http: httpx.Client, token: str) -> int:
    return http.get("/userinfo", headers=bearer(token)).status_code


def refresh(http: httpx.Client, client, token: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    return http.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=client.auth)


def revoke(http: httpx.Client, client, token: str, **extra: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    response = http.post("/revoke", data={"token": token, **extra}, auth=client.auth)
    assert response.status_code == 200, response.text
    return response


def introspect(http: httpx.Client, caller, token: str, **extra: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = http.post("/introspect", data={"token": token, **extra}, auth=caller.auth)
    assert response.status_code == 200, response.text
    assert response.headers.get("cache-control") == "no-store"
    return response.json()


@pytest.fixture
def client(make_client):  # type: ignore[no-untyped-def]
    return make_client()


@pytest.fixture
def resource_server(make_client):  # type: ignore[no-untyped-def]
    """A confidential client that only checks tokens, as an API would."""
    return make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read")


@pytest.fixture
def person(make_user):  # type: ignore[no-untyped-def]
    return make_user()


# -- revocation --------------------------------------------------------------------------------


@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token"])
def test_revoking_a_refresh_token_revokes_its_family(http, client, person, resource_server, hint):
    first = tokens_for(http, client, person)
    second = refresh(http, client, first["refresh_token"]).json()
    assert userinfo_status(http, second["access_token"]) == 200

    extra = {"token_type_hint": hint} if hint else {}
    response = revoke(http, client, second["refresh_token"], **extra)
    assert response.headers.get("cache-control") == "no-store"

    assert refresh(http, client, second["refresh_token"]).json()["error"] == "invalid_grant"
    for access_token in (first["access_token"], second["access_token"]):
        assert userinfo_status(http, access_token) == 401
        assert introspect(http, resource_server, access_token) == INACTIVE
    assert introspect(http, client, second["refresh_token"]) == INACTIVE


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
def test_revoking_an_access_token_leaves_the_refresh_token(http, client, person, resource_server, hint):
    tokens = tokens_for(http, client, person)
    assert introspect(http, resource_server, tokens["access_token"])["active"] is True

    extra = {"token_type_hint": hint} if hint else {}
    revoke(http, client, tokens["access_token"], **extra)

    assert introspect(http, resource_server, tokens["access_token"]) == INACTIVE
    assert userinfo_status(http, tokens["access_token"]) == 401
    response = refresh(http, client, tokens["refresh_token"])
    assert response.status_code == 200, response.text
    assert userinfo_status(http, response.json()["access_token"]) == 200


def test_revoking_an_unknown_token_is_200(http, client):
    revoke(http, client, "no-such-token")
    revoke(http, client, "a.b.c")
    revoke(http, client, secrets.token_urlsafe(32), token_type_hint="refresh_token")


def test_revoking_a_token_twice_is_200(http, client, person):
    tokens = tokens_for(http, client, person)
    revoke(http, client, tokens["access_token"])
    revoke(http, client, tokens["access_token"])
    revoke(http, client, tokens["refresh_token"])
    revoke(http, client, tokens["refresh_token"])


def test_revoking_another_clients_token_is_200_but_changes_nothing(http, make_client, person):
    owner, other = make_client(), make_client()
    tokens = tokens_for(http, owner, person)
    revoke(http, other, tokens["access_token"])
    revoke(http, other, tokens["refresh_token"])
    assert userinfo_status(http, tokens["access_token"]) == 200
    response = refresh(http, owner, tokens["refresh_token"])
    assert response.status_code == 200, response.text


def test_public_client_revokes_its_own_refresh_token(http, make_client, person):
    public = make_client(auth_method="none")
    tokens = tokens_for(http, public, person)
    response = http.post("/revoke", data={"token": tokens["refresh_token"], "client_id": public.client_id})
    assert response.status_code == 200, response.text
    response = http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": public.client_id},
    )
    assert response.json()["error"] == "invalid_grant"


def test_revocation_without_token_is_invalid_request(http, client):
    response = http.post("/revoke", data={"token_type_hint": "access_token"}, auth=client.auth)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


def test_revocation_with_bad_client_auth_is_401(http, client, person):
    tokens = tokens_for(http, client, person)
    response = http.post("/revoke", data={"token": tokens["refresh_token"]}, auth=(client.client_id, "wrong"))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].lower().startswith("basic")
    # Nothing was revoked by the failed request.
    assert refresh(http, client, tokens["refresh_token"]).status_code == 200


def test_revocation_without_client_auth_is_401(http, client, person):
    tokens = tokens_for(http, client, person)
    response = http.post("/revoke", data={"token": tokens["refresh_token"], "client_id": client.client_id})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert refresh(http, client, tokens["refresh_token"]).status_code == 200


def test_revocation_refuses_get(http):
    assert http.get("/revoke", params={"token": "x"}).status_code == 405


# -- introspection -----------------------------------------------------------------------------


def test_introspection_needs_client_authentication(http, client, person):
    tokens = tokens_for(http, client, person)
    response = http.post("/introspect", data={"token": tokens["access_token"]})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    response = http.post("/introspect", data={"token": tokens["access_token"]}, auth=(client.client_id, "wrong"))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].lower().startswith("basic")


def test_introspection_of_an_active_access_token(http, client, person, resource_server):
    tokens = tokens_for(http, client, person)
    body = introspect(http, resource_server, tokens["access_token"])
    assert body["active"] is True
    assert body["scope"] == tokens["scope"]
    assert body["client_id"] == client.client_id
    assert body["sub"] == person.id
    assert body["iss"] == ISSUER
    assert body["token_type"] == "Bearer"
    assert isinstance(body["exp"], int) and isinstance(body["iat"], int)
    assert body["exp"] - body["iat"] == 900
    assert body["exp"] > time.time()


def test_introspection_of_a_client_credentials_token(http, resource_server):
    token = http.post("/token", data={"grant_type": "client_credentials"}, auth=resource_server.auth).json()
    body = introspect(http, resource_server, token["access_token"])
    assert body["active"] is True
    assert body["sub"] == body["client_id"] == resource_server.client_id
    assert body["scope"] == "api.read"


def test_introspection_of_an_active_refresh_token(http, client, person, resource_server):
    tokens = tokens_for(http, client, person)
    body = introspect(http, client, tokens["refresh_token"])
    assert body["active"] is True
    assert body["client_id"] == client.client_id
    assert body["sub"] == person.id
    assert set(body["scope"].split()) == {"openid", "profile", "email", "offline_access"}
    assert body["exp"] > time.time()
    # The hint is only a hint.
    assert introspect(http, client, tokens["refresh_token"], token_type_hint="access_token")["active"] is True
    assert introspect(http, resource_server, tokens["access_token"], token_type_hint="refresh_token")["active"] is True


def test_a_refresh_token_is_inactive_to_any_client_but_its_own(http, client, person, resource_server, make_client):
    """RFC 7662 §4: whether the token can be used where the question comes from; a refresh token
    is used at no resource server, and another client holding it holds a stolen one."""
    tokens = tokens_for(http, client, person)
    other_app = make_client()
    assert introspect(http, resource_server, tokens["refresh_token"]) == INACTIVE
    assert introspect(http, other_app, tokens["refresh_token"]) == INACTIVE
    assert introspect(http, client, tokens["refresh_token"])["active"] is True
    assert introspect(http, resource_server, tokens["access_token"])["active"] is True


def test_client_introspects_its_own_tokens(http, client, person):
    tokens = tokens_for(http, client, person)
    assert introspect(http, client, tokens["access_token"])["active"] is True


def test_introspection_of_garbage_is_inactive(http, resource_server):
    for token in ("garbage", "a.b.c", secrets.token_urlsafe(32), "x" * 9000):
        assert introspect(http, resource_server, token) == INACTIVE


def test_introspection_of_an_expired_access_token_is_inactive(http, ctx, resource_server, person):
    active = ctx.keyring.snapshot().active
    stamp = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": person.id,
        "aud": ISSUER,
        "client_id": "someone",
        "scope": "openid",
        "jti": secrets.token_urlsafe(16),
        "iat": stamp - 1000,
        "exp": stamp - 100,
    }
    expired = jwt.encode({"alg": "RS256", "kid": active.kid, "typ": "at+jwt"}, claims, active.key)
    assert introspect(http, resource_server, expired) == INACTIVE
    # The same token, unexpired, is active: the refusal above is about the expiry.
    claims.update(exp=stamp + 100, jti=secrets.token_urlsafe(16))
    fresh = jwt.encode({"alg": "RS256", "kid": active.kid, "typ": "at+jwt"}, claims, active.key)
    assert introspect(http, resource_server, fresh)["active"] is True


def test_introspection_of_an_expired_refresh_token_is_inactive(http, ctx, client, person, resource_server):
    tokens = tokens_for(http, client, person)
    with ctx.db.begin() as db:
        grant_ids = select(Grant.id).where(Grant.client_id == client.client_id)
        db.execute(
            update(RefreshToken).where(RefreshToken.grant_id.in_(grant_ids)).values(expires_at=int(time.time()) - 1)
        )
    assert introspect(http, client, tokens["refresh_token"]) == INACTIVE


def test_introspection_of_revoked_tokens_is_inactive(http, client, person, resource_server):
    tokens = tokens_for(http, client, person)
    revoke(http, client, tokens["refresh_token"])
    assert introspect(http, client, tokens["refresh_token"]) == INACTIVE
    assert introspect(http, resource_server, tokens["access_token"]) == INACTIVE


def test_introspection_of_a_rotated_away_refresh_token_is_inactive(http, client, person, resource_server):
    tokens = tokens_for(http, client, person)
    rotated = refresh(http, client, tokens["refresh_token"]).json()
    assert introspect(http, client, tokens["refresh_token"]) == INACTIVE
    assert introspect(http, client, rotated["refresh_token"])["active"] is True


def test_public_client_cannot_introspect(http, make_client, person):
    public = make_client(auth_method="none")
    tokens = tokens_for(http, public, person)
    response = http.post("/introspect", data={"token": tokens["access_token"], "client_id": public.client_id})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers.get("cache-control") == "no-store"


def test_introspection_without_token_is_invalid_request(http, resource_server):
    response = http.post("/introspect", data={}, auth=resource_server.auth)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
