"""The token endpoint: RFC 6749 §4.1.3, §4.4, §5, §6; RFC 7636 §4.6; RFC 9068; RFC 9700."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from prometheus_client import REGISTRY
from sqlalchemy import select, text, update

from idp.accounts.users import disable_user
from idp.oauth.errors import InvalidGrant, ReusedGrant
from idp.oauth.grants import registry
from idp.storage import AuthorizationCode, Client, Grant, RefreshToken, revoke_grants
from idp.storage.generations import Topic, bump

from .flows import exchange, pkce_pair, sign_in, tokens_for

ACCESS_TOKEN_TTL = 900


# -- helpers -----------------------------------------------------------------------------------


def assert_no_store(response: httpx.Response) -> None:
    assert response.headers.get("cache-control") == "no-store", response.headers
    assert response.headers.get("pragma") == "no-cache", response.headers


def assert_error(response: httpx.Response, error: str, status: int = 400) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: the status, a JSON body naming the error, never cached."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description", ""), str)
    assert_no_store(response)
    return body


def refresh(http: httpx.Client, client, refresh_token: str, **extra: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return http.post("/token", data=data, auth=client.auth)


def userinfo_status(http: httpx.Client, access_token: str) -> int:
    return http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"}).status_code


def verified(http: httpx.Client, token: str) -> jwt.Token:
    """The token checked against the published JWKS, as an API would check it offline."""
    keyset = KeySet.import_key_set(http.get("/jwks.json").json())
    return jwt.decode(token, keyset, algorithms=["RS256"])


def race(url: str, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send the requests from separate threads, released at the same moment by a barrier."""
    barrier = threading.Barrier(len(requests))
    results: list[httpx.Response | BaseException | None] = [None] * len(requests)

    def send(index: int, kwargs: dict[str, Any]) -> None:
        try:
            with httpx.Client(timeout=30) as client:
                barrier.wait(timeout=10)
                results[index] = client.post(url, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            results[index] = exc

    threads = [threading.Thread(target=send, args=(i, kw)) for i, kw in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        assert isinstance(result, httpx.Response), result
    return results  # type: ignore[return-value]


@pytest.fixture
def client(make_client):  # type: ignore[no-untyped-def]
    return make_client()


@pytest.fixture
def user(make_user):  # type: ignore[no-untyped-def]
    return make_user(name="Ada Lovelace")


@pytest.fixture
def live_http(live_server) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=live_server.url, follow_redirects=False, timeout=30) as client:
        yield client


# -- response headers and errors ---------------------------------------------------------------


def test_successful_token_response_is_not_cacheable(http, client, user):
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    response = exchange(http, client, code, verifier)
    assert response.status_code == 200, response.text
    assert_no_store(response)
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == ACCESS_TOKEN_TTL
    assert {"access_token", "id_token", "refresh_token"} <= body.keys()


def test_error_token_response_is_json_and_not_cacheable(http, client):
    response = http.post("/token", data={"grant_type": "authorization_code"}, auth=client.auth)
    body = assert_error(response, "invalid_request")
    assert body["error_description"]


def test_invalid_client_is_401_and_not_cacheable(http, client):
    response = http.post(
        "/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": client.redirect_uri},
        auth=(client.client_id, "wrong"),
    )
    assert_error(response, "invalid_client", 401)


# -- authorization_code ------------------------------------------------------------------------


def test_code_is_required(http, client, user):
    response = http.post(
        "/token", data={"grant_type": "authorization_code", "redirect_uri": client.redirect_uri}, auth=client.auth
    )
    assert_error(response, "invalid_request")


def test_redirect_uri_is_required(http, client, user):
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    response = http.post(
        "/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier},
        auth=client.auth,
    )
    assert_error(response, "invalid_request")
    # The refusal did not spend the code.
    assert exchange(http, client, code, verifier).status_code == 200


def test_redirect_uri_must_match_the_authorization_request(http, make_client, user):
    client = make_client(redirect_uris=["https://rp.example/cb", "https://rp.example/other"])
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    response = exchange(http, client, code, verifier, redirect_uri="https://rp.example/other")
    assert_error(response, "invalid_grant")


def test_code_of_another_client_is_refused(http, make_client, user):
    owner, thief = make_client(), make_client()
    verifier, challenge = pkce_pair()
    code = sign_in(http, owner, user, challenge)["code"]
    assert_error(exchange(http, thief, code, verifier), "invalid_grant")
    assert exchange(http, owner, code, verifier).status_code == 200


def test_unknown_code_is_refused(http, client):
    assert_error(exchange(http, client, "no-such-code", pkce_pair()[0]), "invalid_grant")


def test_expired_code_is_refused(http, ctx, client, user):
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    with ctx.db.begin() as db:
        changed = db.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.client_id == client.client_id)
            .values(expires_at=int(time.time()) - 1)
        ).rowcount
    assert changed == 1
    assert_error(exchange(http, client, code, verifier), "invalid_grant")


def test_pkce_verifier_missing_is_refused(http, client, user):
    _verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    assert_error(exchange(http, client, code, None), "invalid_grant")


def test_pkce_wrong_verifier_is_refused(http, client, user):
    _verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    other_verifier, _ = pkce_pair()
    assert_error(exchange(http, client, code, other_verifier), "invalid_grant")


@pytest.mark.parametrize("bad", ["short", "a" * 129, "a" * 42 + "!", "a" * 42 + " "])
def test_pkce_malformed_verifier_is_refused(http, client, user, bad):
    _verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    assert_error(exchange(http, client, code, bad), "invalid_grant")


def test_pkce_verifier_without_challenge_is_refused(http, client, user):
    """RFC 9700 §4.8.2: a verifier for a request that had no challenge means a downgrade attempt."""
    code = sign_in(http, client, user, None)["code"]
    assert_error(exchange(http, client, code, pkce_pair()[0]), "invalid_grant")


def test_confidential_client_without_pkce_exchanges_its_code(http, client, user):
    code = sign_in(http, client, user, None)["code"]
    response = exchange(http, client, code, None)
    assert response.status_code == 200, response.text


def test_second_use_of_a_code_fails_and_revokes_what_the_first_issued(http, client, user):
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    first = exchange(http, client, code, verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert userinfo_status(http, tokens["access_token"]) == 200

    assert_error(exchange(http, client, code, verifier), "invalid_grant")

    assert userinfo_status(http, tokens["access_token"]) == 401
    assert_error(refresh(http, client, tokens["refresh_token"]), "invalid_grant")


def test_code_exchanged_twice_at_once_succeeds_exactly_once(live_http, live_server, client, user):
    verifier, challenge = pkce_pair()
    code = sign_in(live_http, client, user, challenge)["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uri,
        "code_verifier": verifier,
    }
    responses = race(live_server.url + "/token", [{"data": data, "auth": client.auth}] * 2)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 400], [r.text for r in responses]
    loser = next(r for r in responses if r.status_code == 400)
    assert loser.json()["error"] == "invalid_grant"


# -- secrets at rest ---------------------------------------------------------------------------


def _values_of(ctx, table: str) -> list[str]:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        return [str(value) for row in db.execute(text(f"SELECT * FROM {table}")) for value in row]


def test_code_is_stored_only_as_a_hash(http, ctx, client, user):
    verifier, challenge = pkce_pair()
    code = sign_in(http, client, user, challenge)["code"]
    with ctx.db() as db:
        assert db.scalar(select(AuthorizationCode).where(AuthorizationCode.client_id == client.client_id))
    assert not [v for v in _values_of(ctx, "authorization_codes") if code in v]
    assert exchange(http, client, code, verifier).status_code == 200


def test_refresh_token_is_stored_only_as_a_hash(http, ctx, client, user):
    tokens = tokens_for(http, client, user)
    with ctx.db() as db:
        grant_ids = select(Grant.id).where(Grant.client_id == client.client_id)
        assert db.scalar(select(RefreshToken).where(RefreshToken.grant_id.in_(grant_ids)))
    assert not [v for v in _values_of(ctx, "refresh_tokens") if tokens["refresh_token"] in v]


def test_client_secret_is_not_stored(ctx, client):
    assert client.client_secret
    values = _values_of(ctx, "clients")
    assert client.client_id in values
    assert not [v for v in values if client.client_secret in v]


# -- refresh_token -----------------------------------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_the_family(http, client, user):
    first = tokens_for(http, client, user)
    response = refresh(http, client, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert_no_store(response)
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert userinfo_status(http, second["access_token"]) == 200

    # The rotated-away token is presented again: taken as theft.
    assert_error(refresh(http, client, first["refresh_token"]), "invalid_grant")

    assert_error(refresh(http, client, second["refresh_token"]), "invalid_grant")
    assert userinfo_status(http, first["access_token"]) == 401
    assert userinfo_status(http, second["access_token"]) == 401


def test_refresh_may_narrow_the_scope(http, client, user):
    first = tokens_for(http, client, user)
    response = refresh(http, client, first["refresh_token"], scope="openid email")
    assert response.status_code == 200, response.text
    narrowed = response.json()
    assert narrowed["scope"].split() == ["openid", "email"]
    assert verified(http, narrowed["access_token"]).claims["scope"].split() == ["openid", "email"]
    info = http.get("/userinfo", headers={"Authorization": f"Bearer {narrowed['access_token']}"}).json()
    assert "email" in info and "name" not in info

    # The new refresh token still holds the whole original grant.
    again = refresh(http, client, narrowed["refresh_token"])
    assert again.status_code == 200, again.text
    original = {"openid", "profile", "email", "offline_access"}
    assert set(again.json()["scope"].split()) == original
    assert set(verified(http, again.json()["access_token"]).claims["scope"].split()) == original


def test_refresh_may_not_widen_the_scope(http, client, user):
    tokens = tokens_for(http, client, user)
    # The client may ask for phone, but this grant did not include it.
    assert_error(refresh(http, client, tokens["refresh_token"], scope="openid phone"), "invalid_scope")


def test_refresh_token_of_another_client_is_refused(http, make_client, user):
    owner, thief = make_client(), make_client()
    tokens = tokens_for(http, owner, user)
    assert_error(refresh(http, thief, tokens["refresh_token"]), "invalid_grant")


def test_unknown_refresh_token_is_refused(http, client):
    assert_error(refresh(http, client, "not-a-refresh-token"), "invalid_grant")


def test_expired_refresh_token_is_refused(http, ctx, client, user):
    tokens = tokens_for(http, client, user)
    with ctx.db.begin() as db:
        grant_ids = select(Grant.id).where(Grant.client_id == client.client_id)
        changed = db.execute(
            update(RefreshToken).where(RefreshToken.grant_id.in_(grant_ids)).values(expires_at=int(time.time()) - 1)
        ).rowcount
    assert changed == 1
    assert_error(refresh(http, client, tokens["refresh_token"]), "invalid_grant")


def test_no_refresh_token_without_offline_access(http, client, user):
    tokens = tokens_for(http, client, user, scope="openid profile email")
    assert "refresh_token" not in tokens
    assert "access_token" in tokens and "id_token" in tokens


def test_no_refresh_token_for_a_client_without_the_refresh_grant(http, make_client, user):
    client = make_client(grant_types=["authorization_code"])
    tokens = tokens_for(http, client, user)
    assert "refresh_token" not in tokens


def test_refresh_grant_refused_for_a_client_without_it(http, make_client, user):
    client = make_client(grant_types=["authorization_code"])
    assert_error(refresh(http, client, "whatever"), "unauthorized_client")


def test_refresh_token_is_required(http, client):
    response = http.post("/token", data={"grant_type": "refresh_token"}, auth=client.auth)
    assert_error(response, "invalid_request")


def test_refresh_twice_at_once_succeeds_exactly_once(http, live_server, client, user):
    tokens = tokens_for(http, client, user)
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    responses = race(live_server.url + "/token", [{"data": data, "auth": client.auth}] * 2)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 400], [r.text for r in responses]
    loser = next(r for r in responses if r.status_code == 400)
    assert loser.json()["error"] == "invalid_grant"


def test_id_token_on_refresh_keeps_auth_time_and_sub(http, client, user):
    first = tokens_for(http, client, user)
    original = verified(http, first["id_token"]).claims
    time.sleep(max(0.0, original["auth_time"] + 1 - time.time()))  # into the second after the sign-in's
    response = refresh(http, client, first["refresh_token"])
    assert response.status_code == 200, response.text
    refreshed = verified(http, response.json()["id_token"]).claims
    assert refreshed["sub"] == original["sub"] == user.id
    assert refreshed["auth_time"] == original["auth_time"]
    assert refreshed["iat"] > original["auth_time"]
    assert refreshed["aud"] == client.client_id


# -- client_credentials ------------------------------------------------------------------------


@pytest.fixture
def service(make_client):  # type: ignore[no-untyped-def]
    return make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read api.write")


def test_client_credentials_issues_an_access_token_for_the_client(http, service):
    response = http.post(
        "/token", data={"grant_type": "client_credentials", "scope": "api.read api.write"}, auth=service.auth
    )
    assert response.status_code == 200, response.text
    assert_no_store(response)
    body = response.json()
    assert "refresh_token" not in body and "id_token" not in body
    assert body["token_type"] == "Bearer"
    token = verified(http, body["access_token"])
    assert token.header["alg"] == "RS256"
    assert token.header["typ"] == "at+jwt"
    assert token.claims["sub"] == service.client_id
    assert token.claims["client_id"] == service.client_id
    assert token.claims["scope"].split() == ["api.read", "api.write"]


def test_client_credentials_may_ask_for_less(http, service):
    response = http.post("/token", data={"grant_type": "client_credentials", "scope": "api.read"}, auth=service.auth)
    assert response.status_code == 200, response.text
    assert verified(http, response.json()["access_token"]).claims["scope"] == "api.read"


@pytest.mark.parametrize("scope", ["openid", "api.read openid", "offline_access"])
def test_client_credentials_refuses_person_scopes(http, make_client, scope):
    service = make_client(redirect_uris=[], grant_types=["client_credentials"], scope="openid api.read offline_access")
    response = http.post("/token", data={"grant_type": "client_credentials", "scope": scope}, auth=service.auth)
    assert_error(response, "invalid_scope")


def test_client_credentials_refuses_unregistered_scope(http, service):
    response = http.post(
        "/token", data={"grant_type": "client_credentials", "scope": "api.read api.delete"}, auth=service.auth
    )
    assert_error(response, "invalid_scope")


def test_client_credentials_refused_for_a_client_without_the_grant(http, client):
    response = http.post("/token", data={"grant_type": "client_credentials"}, auth=client.auth)
    assert_error(response, "unauthorized_client")


def test_authorization_code_refused_for_a_client_without_the_grant(http, service):
    response = http.post(
        "/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": "https://rp.example/cb"},
        auth=service.auth,
    )
    assert_error(response, "unauthorized_client")


# -- malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize("grant_type", ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"])
def test_unsupported_grant_type(http, client, grant_type):
    response = http.post("/token", data={"grant_type": grant_type}, auth=client.auth)
    assert_error(response, "unsupported_grant_type")


def register_for(ctx, client, grant_type: str) -> None:  # type: ignore[no-untyped-def]
    """Register ``client`` for a grant the registry holds only while a test runs (the command line
    knows only the grants that ship), made known to the processes' caches as every change is."""
    with ctx.db.begin() as db:
        stored = db.get_one(Client, client.client_id)
        stored.grant_types = [*stored.grant_types, grant_type]
        bump(db, Topic.CLIENTS)


def test_the_endpoint_serves_whatever_grant_the_registry_holds(http, ctx, client, monkeypatch):
    """A new grant is a module and its line in the registry: the endpoint needs nothing else."""

    def issue(_db, _issuer, asking, form):  # type: ignore[no-untyped-def]
        return {"access_token": f"for {asking.id}", "token_type": "Bearer", "echo": form["echo"]}

    monkeypatch.setitem(registry.GRANTS, "urn:example:test", issue)
    asked = {"grant_type": "urn:example:test", "echo": "x"}
    assert_error(http.post("/token", data=asked, auth=client.auth), "unauthorized_client")
    register_for(ctx, client, "urn:example:test")
    counted = {"grant_type": "urn:example:test"}
    before = REGISTRY.get_sample_value("idp_tokens_issued_total", counted) or 0.0
    response = http.post("/token", data=asked, auth=client.auth)
    assert response.status_code == 200, response.text
    assert_no_store(response)
    assert response.json() == {"access_token": f"for {client.client_id}", "token_type": "Bearer", "echo": "x"}
    assert REGISTRY.get_sample_value("idp_tokens_issued_total", counted) == before + 1


@pytest.mark.parametrize(("error", "kept"), [(InvalidGrant, False), (ReusedGrant, True)])
def test_a_refused_grant_keeps_what_it_wrote_only_when_its_error_says_so(
    http, ctx, client, user, monkeypatch, error, kept
):
    """The request's one transaction is the pipeline's: a grant commits nothing itself."""
    tokens = tokens_for(http, client, user)
    register_for(ctx, client, "urn:example:refused")

    def issue(db, _issuer, asking, _form):  # type: ignore[no-untyped-def]
        revoke_grants(db, Grant.client_id == asking.id)
        raise error("refused")

    monkeypatch.setitem(registry.GRANTS, "urn:example:refused", issue)
    assert_error(http.post("/token", data={"grant_type": "urn:example:refused"}, auth=client.auth), "invalid_grant")
    assert userinfo_status(http, tokens["access_token"]) == (401 if kept else 200)


def test_missing_grant_type(http, client):
    assert_error(http.post("/token", data={"code": "x"}, auth=client.auth), "invalid_request")


def test_get_is_not_allowed(http):
    assert http.get("/token", params={"grant_type": "client_credentials"}).status_code == 405


def test_json_body_is_refused(http, service):
    response = http.post("/token", json={"grant_type": "client_credentials"}, auth=service.auth)
    assert_error(response, "invalid_request")


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x", None])
def test_wrong_content_type_is_refused(http, service, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post("/token", content=b"grant_type=client_credentials", headers=headers, auth=service.auth)
    assert_error(response, "invalid_request")


def test_repeated_parameter_is_refused(http, service):
    response = http.post(
        "/token",
        content=b"grant_type=client_credentials&scope=api.read&scope=api.write",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=service.auth,
    )
    body = assert_error(response, "invalid_request")
    assert "scope" in body["error_description"]


def test_oversized_body_is_a_clean_400(http, service):
    body = b"grant_type=client_credentials&padding=" + b"a" * (64 * 1024)
    response = http.post(
        "/token", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}, auth=service.auth
    )
    assert_error(response, "invalid_request")


def test_oversized_chunked_body_is_a_clean_400(http, service):
    """No Content-Length to go by: the limit must hold while reading."""

    def chunks() -> Iterator[bytes]:
        yield b"grant_type=client_credentials&padding="
        for _ in range(80):
            yield b"a" * 1024

    response = http.post(
        "/token", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}, auth=service.auth
    )
    assert_error(response, "invalid_request")


# -- the access token (RFC 9068) ---------------------------------------------------------------


def test_access_token_is_an_rfc9068_jwt(http, client, user):
    tokens = tokens_for(http, client, user)
    jwks = http.get("/jwks.json").json()
    token = verified(http, tokens["access_token"])
    assert token.header["typ"] == "at+jwt"
    assert token.header["alg"] == "RS256"
    assert token.header["kid"] in {key["kid"] for key in jwks["keys"]}
    claims = token.claims
    assert {"iss", "sub", "aud", "client_id", "scope", "jti", "exp", "iat"} <= claims.keys()
    assert claims["iss"] == "http://testserver"
    assert claims["sub"] == user.id
    assert claims["client_id"] == client.client_id
    assert claims["aud"]
    assert set(claims["scope"].split()) == {"openid", "profile", "email", "offline_access"}
    assert claims["exp"] - claims["iat"] == ACCESS_TOKEN_TTL
    assert abs(claims["iat"] - time.time()) < 60
    assert tokens["scope"] == claims["scope"]


def test_access_tokens_have_distinct_jti(http, client, user):
    first = tokens_for(http, client, user)
    second = refresh(http, client, first["refresh_token"]).json()
    assert verified(http, first["access_token"]).claims["jti"] != verified(http, second["access_token"]).claims["jti"]


def test_refresh_for_a_disabled_person_is_refused(http, ctx, client, user):
    tokens = tokens_for(http, client, user)
    with ctx.db.begin() as db:
        disable_user(db, user.id)
    assert_error(refresh(http, client, tokens["refresh_token"]), "invalid_grant")
