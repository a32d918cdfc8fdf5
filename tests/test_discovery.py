"""Discovery (OIDC Discovery 1.0 §3-4, RFC 8414), health probes and the security headers of pages."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from idp.oauth.clients import GRANT_TYPES
from idp.oauth.grants.registry import GRANTS

from .conftest import TEST_ISSUER
from .flows import eventually

ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "end_session_endpoint",
    "revocation_endpoint",
    "introspection_endpoint",
    "authorization_challenge_endpoint",
)


@pytest.fixture
def config(http) -> dict:  # type: ignore[no-untyped-def]
    response = http.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_both_well_known_paths_serve_the_same_document(http, config):
    other = http.get("/.well-known/oauth-authorization-server")
    assert other.status_code == 200
    assert other.json() == config


def test_issuer_is_the_configured_issuer(config):
    assert config["issuer"] == TEST_ISSUER


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_endpoint_is_under_the_issuer_and_answers(http, config, name):
    url = config[name]
    assert url.startswith(TEST_ISSUER + "/")
    path = urlsplit(url).path
    get = http.get(path)
    post = http.post(path)
    # Each endpoint exists for at least one of GET and POST: neither answers 404.
    assert get.status_code != 404 and post.status_code != 404, (name, get.status_code, post.status_code)
    assert get.status_code != 500 and post.status_code != 500


def test_jwks_uri_serves_the_published_keys(http, config):
    response = http.get(urlsplit(config["jwks_uri"]).path)
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys and all(k["kty"] == "RSA" and "kid" in k and "d" not in k for k in keys)


def test_protocol_choices_advertised(config):
    assert config["response_types_supported"] == ["code"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["request_parameter_supported"] is False
    assert config["request_uri_parameter_supported"] is False
    assert config["authorization_response_iss_parameter_supported"] is True
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(config["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    }
    assert "RS256" in config["token_endpoint_auth_signing_alg_values_supported"]
    assert set(config["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    assert {"openid", "offline_access", "profile", "email", "phone"} <= set(config["scopes_supported"])
    assert set(config["response_modes_supported"]) == {"query", "form_post"}
    assert "public" in config["subject_types_supported"]
    for name in ("end_session_endpoint", "revocation_endpoint", "introspection_endpoint"):
        assert config[name]


def test_the_grants_advertised_and_registrable_are_the_registrys(config):
    assert list(GRANTS) == ["authorization_code", "refresh_token", "client_credentials"]
    assert config["grant_types_supported"] == list(GRANTS)
    assert GRANT_TYPES == tuple(GRANTS)


def test_authlib_accepts_the_metadata(config, monkeypatch):
    # The test issuer is plain http; Authlib insists on https unless told this is a test.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    discovery = pytest.importorskip("authlib.oidc.discovery")
    metadata_class = getattr(discovery, "OpenIDProviderMetadata", None)
    if metadata_class is None:
        pytest.skip("this Authlib has no OpenIDProviderMetadata")
    metadata = metadata_class(config)
    metadata.validate()
    assert metadata["issuer"] == TEST_ISSUER


def test_healthz(http):
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_checks_the_database(http):
    response = http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/login", "/.well-known/openid-configuration", "/logout", "/authorize"])
def test_security_headers(http, path):
    response = http.get(path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = response.headers["content-security-policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp


def test_sign_in_page_is_not_cached(http):
    response = http.get("/login")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/jwks.json"])
def test_a_document_already_held_is_answered_304_without_a_body(http, path):
    first = http.get(path)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = http.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == first.headers["cache-control"]
    stale = http.get(path, headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200
    assert stale.content == first.content


def test_the_jwks_etag_changes_with_the_keys(http, ctx):
    before = http.get("/jwks.json")
    ctx.keystore.rotate()
    assert eventually(lambda: http.get("/jwks.json").headers["etag"] != before.headers["etag"])
    after = http.get("/jwks.json", headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert {key["kid"] for key in after.json()["keys"]} > {key["kid"] for key in before.json()["keys"]}


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/jwks.json"])
def test_head_answers_the_headers_of_get_without_a_body(http, path):
    got, head = http.get(path), http.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    for name in ("content-type", "etag", "cache-control", "vary", "x-content-type-options", "content-security-policy"):
        assert head.headers[name] == got.headers[name]
    assert head.headers["x-request-id"] != got.headers["x-request-id"]


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/jwks.json"])
def test_every_answer_of_a_document_names_what_it_varies_on_and_carries_the_security_headers(http, path):
    """The answer of a request with an ``Origin`` differs from one without: a cache must keep both,
    the 304 included."""
    first = http.get(path)
    held = http.get(path, headers={"If-None-Match": first.headers["etag"], "Origin": "https://app.example"})
    for answer in (first, held):
        assert answer.headers["vary"] == "Origin"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-request-id"]
    assert held.status_code == 304 and held.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in first.headers
