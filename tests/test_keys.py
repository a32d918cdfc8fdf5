"""Signing keys: files on disk, ``idp keys`` rotate/list/retire, the JWKS, rotation seen live."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey
from starlette.testclient import TestClient

from idp.app import create_app

from .conftest import TEST_ISSUER, make_settings, run_idp
from .flows import RegisteredClient, client_credentials_token, eventually, introspect, tokens_for

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace; base64url."""
    required = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


def header_of(token: str) -> dict[str, Any]:
    return pyjwt.get_unverified_header(token)


def claims_of(token: str) -> dict[str, Any]:
    return pyjwt.decode(token, options={"verify_signature": False})


def idp_ok(environ: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = run_idp(environ, *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [json.loads(line) for line in result.stdout.splitlines()]


def idp_refused(environ: dict[str, str], *args: str) -> str:
    result = run_idp(environ, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def pem_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pem"))


def userinfo_status(http: httpx.Client, token: str) -> httpx.Response:
    return http.get("/userinfo", headers={"Authorization": f"Bearer {token}"})


def jwks_kids(http: httpx.Client) -> list[str]:
    response = http.get("/jwks.json")
    assert response.status_code == 200
    return [key["kid"] for key in response.json()["keys"]]


@pytest.fixture
def own_keys(tmp_path: Path, base_environ: dict[str, str]) -> dict[str, str]:
    """The suite's database and secret, but a keys directory of this test's own."""
    return base_environ | {"IDP_KEYS_DIR": str(tmp_path / "keys"), "HOME": str(tmp_path)}


@pytest.fixture
def own_app(own_keys: dict[str, str]) -> Iterator[Callable[[], TestClient]]:
    """An in-process app on ``own_keys``; built on demand, after the test made its first key."""
    with ExitStack() as stack:

        def build() -> TestClient:
            app = create_app(make_settings(own_keys))
            stack.callback(app.state.ctx.close)
            return stack.enter_context(TestClient(app, base_url=TEST_ISSUER, follow_redirects=False))

        yield build


def cc_client(make_client) -> RegisteredClient:  # type: ignore[no-untyped-def]
    return make_client(grant_types=["authorization_code", "refresh_token", "client_credentials"])


def test_thumbprint_helper_matches_rfc7638_example():
    """The independent computation reproduces RFC 7638 §3.1, so it can judge the provider's kids."""
    example = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiF"
        "V4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
        "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU"
        "8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert rfc7638_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rotate_makes_private_key_files_and_list_shows_newest_active(own_keys, tmp_path):
    keys_dir = tmp_path / "keys"
    assert idp_ok(own_keys, "keys", "list") == []

    [first] = idp_ok(own_keys, "keys", "rotate")
    [second] = idp_ok(own_keys, "keys", "rotate")
    assert first["kid"] != second["kid"]
    assert first["active"] is True and second["active"] is True

    files = pem_files(keys_dir)
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert b"PRIVATE KEY" in path.read_bytes()
    assert not stat.S_IMODE(keys_dir.stat().st_mode) & 0o077

    listed = idp_ok(own_keys, "keys", "list")
    assert {k["kid"] for k in listed} == {first["kid"], second["kid"]}
    assert [k["kid"] for k in listed if k["active"]] == [second["kid"]]
    assert listed[-1]["kid"] == second["kid"]


def test_kid_is_the_rfc7638_thumbprint_and_names_the_signing_key(own_keys, own_app, make_client, make_user):
    idp_ok(own_keys, "keys", "rotate")
    [active] = idp_ok(own_keys, "keys", "rotate")
    http = own_app()

    document = http.get("/jwks.json").json()
    assert len(document["keys"]) == 2
    for jwk in document["keys"]:
        assert jwk["kid"] == rfc7638_thumbprint(jwk)
    listed = {k["kid"] for k in idp_ok(own_keys, "keys", "list")}
    assert {jwk["kid"] for jwk in document["keys"]} == listed

    client = cc_client(make_client)
    tokens = tokens_for(http, client, make_user())
    for token in (tokens["id_token"], tokens["access_token"], client_credentials_token(http, client)):
        header = header_of(token)
        assert header["alg"] == "RS256"
        assert header["kid"] == active["kid"]


def test_jwks_serves_every_published_key_and_no_private_part(http, base_environ, settings):
    published = {k["kid"] for k in idp_ok(base_environ, "keys", "list")}
    # Other tests may have rotated a moment ago: the app sees it within about a second.
    assert eventually(lambda: set(jwks_kids(http)) == published, 3.0)
    response = http.get("/jwks.json")
    assert response.status_code == 200
    cache = response.headers["cache-control"]
    match = re.search(r"max-age=(\d+)", cache)
    assert match and int(match.group(1)) > 0, cache
    assert "no-store" not in cache
    assert response.headers["content-type"].startswith(("application/jwk-set+json", "application/json"))

    document = response.json()
    assert set(document) == {"keys"}
    assert {key["kid"] for key in document["keys"]} == published
    assert len(document["keys"]) == len(pem_files(settings.keys_dir))
    for key in document["keys"]:
        assert key["kty"] == "RSA"
        assert key["use"] == "sig"
        assert key["alg"] == "RS256"
        assert key["n"] and key["e"]
        assert not PRIVATE_MEMBERS & set(key), key

    parsed = pyjwt.PyJWKSet.from_dict(document)
    assert {k.key_id for k in parsed.keys} == published
    assert all(k.algorithm_name == "RS256" for k in parsed.keys)


def test_running_server_sees_a_rotation_without_restart(live_server, make_client, make_user):
    client = cc_client(make_client)
    user = make_user()
    with httpx.Client(base_url=live_server.url, follow_redirects=False, timeout=10) as web:
        old_tokens = tokens_for(web, client, user)
        old_cc = client_credentials_token(web, client)
        old_kid = header_of(old_cc)["kid"]
        assert header_of(old_tokens["access_token"])["kid"] == old_kid

        rotated = live_server.idp("keys", "rotate")
        assert rotated.returncode == 0, rotated.stderr
        new_kid = json.loads(rotated.stdout)["kid"]
        assert new_kid != old_kid

        def new_key_in_use() -> bool:
            return header_of(client_credentials_token(web, client))["kid"] == new_kid

        assert eventually(new_key_in_use, 5.0), "the running server kept signing with the old key"
        assert {old_kid, new_kid} <= set(jwks_kids(web))

        # Tokens the old key signed still verify while it is published.
        assert userinfo_status(web, old_tokens["access_token"]).status_code == 200
        assert introspect(web, client, old_cc)["active"] is True
        assert introspect(web, client, old_tokens["access_token"])["active"] is True
        keyset = pyjwt.PyJWKSet.from_dict(web.get("/jwks.json").json())
        old_key = next(k for k in keyset.keys if k.key_id == old_kid)
        id_claims = pyjwt.decode(
            old_tokens["id_token"],
            old_key.key,
            algorithms=["RS256"],
            audience=client.client_id,
            issuer=live_server.url,
        )
        assert id_claims["sub"] == user.id

        # And new sign-ins use the new key throughout.
        new_tokens = tokens_for(web, client, user)
        assert header_of(new_tokens["id_token"])["kid"] == new_kid
        assert header_of(new_tokens["access_token"])["kid"] == new_kid
        assert userinfo_status(web, new_tokens["access_token"]).status_code == 200

        # An ID token hint signed by the rotated, still published key is honoured at end_session.
        ended = web.get(
            "/logout",
            params={
                "id_token_hint": old_tokens["id_token"],
                "post_logout_redirect_uri": "https://rp.example/bye",
                "state": "s1",
            },
        )
        assert ended.status_code in (302, 303), ended.text
        assert ended.headers["location"] == "https://rp.example/bye?state=s1"


def test_retire_refuses_the_active_key_and_a_recent_one_unless_forced(
    own_keys, own_app, tmp_path, make_client, make_user
):
    [old] = idp_ok(own_keys, "keys", "rotate")
    http = own_app()
    client = cc_client(make_client)
    user_tokens = tokens_for(http, client, make_user())
    old_cc = client_credentials_token(http, client)
    assert header_of(old_cc)["kid"] == old["kid"]

    [new] = idp_ok(own_keys, "keys", "rotate")
    assert "active" in idp_refused(own_keys, "keys", "retire", new["kid"])
    refusal = idp_refused(own_keys, "keys", "retire", old["kid"])
    assert old["kid"] in refusal and "--force" in refusal
    assert "no key" in idp_refused(own_keys, "keys", "retire", "not-a-kid")
    assert len(pem_files(tmp_path / "keys")) == 2
    assert {k["kid"] for k in idp_ok(own_keys, "keys", "list")} == {old["kid"], new["kid"]}

    assert eventually(lambda: new["kid"] in jwks_kids(http))
    assert old["kid"] in jwks_kids(http)
    assert userinfo_status(http, user_tokens["access_token"]).status_code == 200
    assert introspect(http, client, old_cc)["active"] is True

    assert idp_ok(own_keys, "keys", "retire", old["kid"], "--force") == [{"kid": old["kid"], "retired": True}]
    assert [k["kid"] for k in idp_ok(own_keys, "keys", "list")] == [new["kid"]]
    assert len(pem_files(tmp_path / "keys")) == 1

    assert eventually(lambda: old["kid"] not in jwks_kids(http)), "the retired key stayed in the JWKS"
    assert jwks_kids(http) == [new["kid"]]
    refused = userinfo_status(http, user_tokens["access_token"])
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert introspect(http, client, old_cc) == {"active": False}
    assert introspect(http, client, user_tokens["access_token"]) == {"active": False}
    # The key that stays keeps working.
    assert introspect(http, client, client_credentials_token(http, client))["active"] is True


def test_retire_without_force_once_its_tokens_have_expired(own_keys, tmp_path):
    """Files are named ``<created>-<kid>.pem``; backdating both makes the old key's tokens long expired."""
    [old] = idp_ok(own_keys, "keys", "rotate")
    [new] = idp_ok(own_keys, "keys", "rotate")
    keys_dir = tmp_path / "keys"
    for path, hours in zip(pem_files(keys_dir), (3, 2), strict=True):
        stamp = time.strftime("%Y%m%dT%H%M%S000000Z", time.gmtime(time.time() - hours * 3600))
        path.rename(keys_dir / f"{stamp}-{path.name.split('-', 1)[1]}")
    listed = idp_ok(own_keys, "keys", "list")
    assert [k["kid"] for k in listed] == [old["kid"], new["kid"]]

    assert idp_ok(own_keys, "keys", "retire", old["kid"]) == [{"kid": old["kid"], "retired": True}]
    assert [k["kid"] for k in idp_ok(own_keys, "keys", "list")] == [new["kid"]]
    assert "active" in idp_refused(own_keys, "keys", "retire", new["kid"])


def _forgeries(genuine: str, published: dict[str, Any]) -> dict[str, str]:
    """The genuine token's header and claims, signed in ways the provider never published."""
    header = header_of(genuine)
    claims = claims_of(genuine)
    published_kid = published["kid"]
    stranger = RSAKey.generate_key(2048, private=True)
    forged = {
        "own kid": jose_jwt.encode({**header, "kid": stranger.thumbprint()}, claims, stranger),
        "published kid": jose_jwt.encode({**header, "kid": published_kid}, claims, stranger),
        "no kid": jose_jwt.encode({k: v for k, v in header.items() if k != "kid"}, claims, stranger),
    }
    # alg=none and HS256 keyed with the published public key (algorithm confusion).
    unsigned = b64url(json.dumps({**header, "alg": "none"}).encode()) + "." + b64url(json.dumps(claims).encode())
    forged["alg none"] = unsigned + "."
    signing_input = b64url(json.dumps({**header, "alg": "HS256"}).encode()) + "." + b64url(json.dumps(claims).encode())
    public_pem = RSAKey.import_key(published).as_pem(private=False)
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged["hs256"] = signing_input + "." + b64url(mac)
    forged["tampered"] = genuine.rsplit(".", 1)[0] + "." + b64url(os.urandom(256))
    return forged


def test_tokens_signed_by_an_unpublished_key_do_not_verify(http, make_client, make_user):
    client = make_client()
    tokens = tokens_for(http, client, make_user())
    genuine = tokens["access_token"]
    assert userinfo_status(http, genuine).status_code == 200
    assert introspect(http, client, genuine)["active"] is True

    kid = header_of(genuine)["kid"]
    published = next(k for k in http.get("/jwks.json").json()["keys"] if k["kid"] == kid)
    for name, forged in _forgeries(genuine, published).items():
        response = userinfo_status(http, forged)
        assert response.status_code == 401, name
        assert 'error="invalid_token"' in response.headers["www-authenticate"], name
        assert introspect(http, client, forged) == {"active": False}, name

    # A forged ID token hint is no hint: end_session asks the person instead of signing them out.
    logout = {"client_id": client.client_id, "post_logout_redirect_uri": "https://rp.example/bye", "state": "s2"}
    for name, forged in _forgeries(tokens["id_token"], published).items():
        asked = http.get("/logout", params={**logout, "id_token_hint": forged})
        assert asked.status_code == 200, name
        assert 'name="decision"' in asked.text and 'value="logout"' in asked.text, name
    ended = http.get("/logout", params={**logout, "id_token_hint": tokens["id_token"]})
    assert ended.status_code in (302, 303)
    assert ended.headers["location"] == "https://rp.example/bye?state=s2"
