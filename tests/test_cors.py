"""CORS, through HTTP: discovery and the JWKS for every origin; the token, revocation and UserInfo
endpoints only for an origin the request's client registered; nothing anywhere else."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from .flows import RegisteredClient, pkce_pair, sign_in, tokens_for

ACAO = "access-control-allow-origin"


def new_origin(name: str) -> str:
    """An origin no other test registers: the suite's clients share one database."""
    return f"https://{name}-{secrets.token_hex(4)}.example"


def preflight(http: httpx.Client, path: str, origin: str, method: str = "POST", headers: str = "") -> httpx.Response:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return http.options(path, headers=asked)


def assert_readable_by(response: httpx.Response, origin: str) -> None:
    assert response.headers.get(ACAO) == origin, response.headers
    assert "origin" in response.headers.get("vary", "").lower(), response.headers
    assert "access-control-allow-credentials" not in response.headers


def assert_no_cors(response: httpx.Response) -> None:
    assert not any(name.startswith("access-control-") for name in response.headers), response.headers


def assert_preflight_allows(response: httpx.Response, origin: str, methods: set[str]) -> None:
    assert response.status_code == 204, response.text
    assert_readable_by(response, origin)
    assert set(response.headers["access-control-allow-methods"].replace(" ", "").split(",")) == methods
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert allowed == {"authorization", "content-type"}
    assert int(response.headers["access-control-max-age"]) > 0


@pytest.fixture
def spa_origin() -> str:
    return new_origin("spa")


@pytest.fixture
def spa(make_client, spa_origin: str) -> RegisteredClient:  # type: ignore[no-untyped-def]
    """A single-page app: a public client on its own origin."""
    return make_client(
        name="SPA",
        redirect_uris=[spa_origin + "/cb"],
        auth_method="none",
        web_origins=[spa_origin],
        first_party=True,
    )


@pytest.fixture
def other_origin() -> str:
    return new_origin("other")


@pytest.fixture
def other(make_client, other_origin: str) -> RegisteredClient:  # type: ignore[no-untyped-def]
    """Another app, with an origin of its own."""
    return make_client(
        name="Other SPA",
        redirect_uris=[other_origin + "/cb"],
        auth_method="none",
        web_origins=[other_origin],
        first_party=True,
    )


@pytest.fixture
def tokens(http, spa, make_user) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return tokens_for(http, spa, make_user())


def refresh(http: httpx.Client, client: RegisteredClient, token: str, origin: str) -> httpx.Response:
    return http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client.client_id},
        headers={"Origin": origin},
    )


# --- public documents -----------------------------------------------------------------------------


PUBLIC = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks.json")


@pytest.mark.parametrize("path", PUBLIC)
def test_discovery_and_jwks_are_readable_from_any_origin(http, path):
    anywhere = new_origin("anywhere")
    for method in ("GET", "HEAD"):
        response = http.request(method, path, headers={"Origin": anywhere})
        assert response.status_code == 200
        assert response.headers[ACAO] == "*"
        assert "access-control-allow-credentials" not in response.headers
    answered = preflight(http, path, anywhere, method="GET")
    assert answered.status_code == 200
    assert answered.headers[ACAO] == "*"
    assert "GET" in answered.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in answered.headers
    assert_no_cors(http.get(path))
    plain = http.options(path)
    assert plain.status_code == 405 and "GET" in plain.headers["allow"]
    assert http.post(path).status_code == 405


# --- the token endpoint -------------------------------------------------------------------------


def test_token_preflight_is_answered_only_for_a_registered_origin(http, spa, spa_origin):
    assert_preflight_allows(preflight(http, "/token", spa_origin, headers="content-type"), spa_origin, {"POST"})
    refused = preflight(http, "/token", new_origin("unregistered"))
    assert refused.status_code == 400
    assert_no_cors(refused)
    plain = http.options("/token")
    assert plain.status_code == 405 and "POST" in plain.headers["allow"]
    assert_no_cors(plain)


def test_code_exchange_refresh_and_errors_are_readable_by_the_clients_origin(http, spa, spa_origin, make_user):
    verifier, challenge = pkce_pair()
    code = sign_in(http, spa, make_user(), challenge)["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": spa.redirect_uri,
        "code_verifier": verifier,
        "client_id": spa.client_id,
    }
    exchanged = http.post("/token", data=data, headers={"Origin": spa_origin})
    assert exchanged.status_code == 200, exchanged.text
    assert_readable_by(exchanged, spa_origin)
    first = exchanged.json()["refresh_token"]

    refreshed = refresh(http, spa, first, spa_origin)
    assert refreshed.status_code == 200, refreshed.text
    assert_readable_by(refreshed, spa_origin)
    assert refreshed.json()["refresh_token"] != first

    reused = refresh(http, spa, first, spa_origin)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert_readable_by(reused, spa_origin)
    assert "WWW-Authenticate" in reused.headers["access-control-expose-headers"]


def test_an_unregistered_origin_is_served_but_gets_no_cors_header(http, spa, tokens):
    stranger = new_origin("stranger")
    refreshed = refresh(http, spa, tokens["refresh_token"], stranger)
    assert refreshed.status_code == 200, "served as before: the browser keeps the answer from the page"
    assert_no_cors(refreshed)
    assert "origin" in refreshed.headers["vary"].lower()
    refused = refresh(http, spa, "not-a-refresh-token", stranger)
    assert refused.status_code == 400
    assert_no_cors(refused)


def test_an_origin_of_one_client_is_not_honoured_for_another(http, spa, spa_origin, other, other_origin, tokens):
    """The preflight has no client and is answered for any registered origin; the request is not."""
    assert preflight(http, "/token", other_origin).headers.get(ACAO) == other_origin
    refreshed = refresh(http, spa, tokens["refresh_token"], other_origin)
    assert refreshed.status_code == 200
    assert_no_cors(refreshed)
    refused = refresh(http, other, "not-a-refresh-token", spa_origin)
    assert refused.status_code == 400
    assert_no_cors(refused)
    own = refresh(http, other, "not-a-refresh-token", other_origin)
    assert_readable_by(own, other_origin)

    info = http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}", "Origin": other_origin})
    assert info.status_code == 200
    assert_no_cors(info)
    revoked = http.post(
        "/revoke", data={"token": tokens["access_token"], "client_id": spa.client_id}, headers={"Origin": other_origin}
    )
    assert revoked.status_code == 200
    assert_no_cors(revoked)


def test_a_request_naming_no_known_client_is_readable_by_a_registered_origin(http, spa, spa_origin):
    """Its answer is an error, the same for everyone: the app on a registered origin may read it."""
    unknown = http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": "no-such-client"},
        headers={"Origin": spa_origin},
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    assert_readable_by(unknown, spa_origin)
    malformed = http.post("/token", content=b"grant_type=refresh_token", headers={"Origin": spa_origin})
    assert malformed.status_code == 400
    assert_readable_by(malformed, spa_origin)
    stranger = http.post(
        "/token", data={"grant_type": "refresh_token", "client_id": "no-such-client"}, headers={"Origin": "null"}
    )
    assert_no_cors(stranger)


# --- revocation and userinfo ----------------------------------------------------------------------


def test_revocation_answers_the_clients_origin(http, spa, spa_origin, tokens):
    assert_preflight_allows(preflight(http, "/revoke", spa_origin), spa_origin, {"POST"})
    assert_no_cors(preflight(http, "/revoke", new_origin("unregistered")))
    stranger = http.post(
        "/revoke",
        data={"token": "unknown", "client_id": spa.client_id},
        headers={"Origin": new_origin("unregistered")},
    )
    assert stranger.status_code == 200
    assert_no_cors(stranger)
    revoked = http.post(
        "/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token", "client_id": spa.client_id},
        headers={"Origin": spa_origin},
    )
    assert revoked.status_code == 200
    assert_readable_by(revoked, spa_origin)
    assert refresh(http, spa, tokens["refresh_token"], spa_origin).json()["error"] == "invalid_grant"


def test_userinfo_answers_the_origin_of_the_tokens_client(http, spa, spa_origin, tokens):
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert_preflight_allows(
        preflight(http, "/userinfo", spa_origin, method="GET", headers="authorization"), spa_origin, {"GET", "POST"}
    )
    assert_no_cors(preflight(http, "/userinfo", new_origin("unregistered"), method="GET"))

    info = http.get("/userinfo", headers={**bearer, "Origin": spa_origin})
    assert info.status_code == 200 and "sub" in info.json()
    assert_readable_by(info, spa_origin)
    posted = http.post("/userinfo", headers={**bearer, "Origin": spa_origin})
    assert_readable_by(posted, spa_origin)
    stranger = http.get("/userinfo", headers={**bearer, "Origin": new_origin("unregistered")})
    assert stranger.status_code == 200
    assert_no_cors(stranger)

    expired = http.get("/userinfo", headers={"Authorization": "Bearer not.a.token", "Origin": spa_origin})
    assert expired.status_code == 401
    assert_readable_by(expired, spa_origin)
    assert "WWW-Authenticate" in expired.headers["access-control-expose-headers"]
    assert_no_cors(http.get("/userinfo", headers={"Origin": new_origin("unregistered")}))


# --- everything else ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/authorize"),
        ("GET", "/login"),
        ("GET", "/register"),
        ("GET", "/password/forgot"),
        ("GET", "/account"),
        ("GET", "/api/account"),
        ("GET", "/logout"),
        ("GET", "/healthz"),
        ("POST", "/introspect"),
        ("OPTIONS", "/authorize"),
        ("OPTIONS", "/introspect"),
        ("OPTIONS", "/api/account"),
    ],
)
def test_no_other_path_answers_cors(http, spa, spa_origin, method, path):
    headers = {"Origin": spa_origin}
    if method == "OPTIONS":
        headers["Access-Control-Request-Method"] = "POST"
    assert_no_cors(http.request(method, path, headers=headers))


def test_introspection_sends_no_cors_header_even_to_its_clients_origin(http, make_client, tokens):
    origin = new_origin("backend")
    backend = make_client(web_origins=[origin])
    asked = {"token": tokens["access_token"]}
    response = http.post("/introspect", data=asked, auth=backend.auth, headers={"Origin": origin})
    assert response.status_code == 200 and response.json()["active"] is True
    assert_no_cors(response)
