"""A real relying party against a real ``idp serve``: Authlib's OAuth client runs the code flow with
PKCE, refreshes and revokes; PyJWT's ``PyJWKClient`` checks the tokens against the published JWKS.

The "browser" is an ``httpx.Client`` that keeps cookies and does not follow redirects, so every hop
(/authorize, /login, /consent, the callback) is seen and checked.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from joserfc.errors import InvalidClaimError

from idp.context import Context
from idp.settings import Settings
from idp.storage import User, UserGroup

from .conftest import PASSWORD, LiveServer, free_port
from .flows import hidden_fields, query_of

SCOPE = "openid profile email offline_access"


@pytest.fixture(autouse=True)
def _plain_http_is_fine_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live server listens on http://127.0.0.1; Authlib refuses plain http unless told."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@dataclass(frozen=True)
class App:
    client_id: str
    client_secret: str
    redirect_uri: str
    post_logout_redirect_uri: str


@dataclass(frozen=True)
class Person:
    id: str
    email: str


@pytest.fixture(scope="module")
def op(live_server: LiveServer) -> dict[str, Any]:
    response = httpx.get(live_server.url + "/.well-known/openid-configuration")
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def jwks_client(op: dict[str, Any]) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(op["jwks_uri"], cache_keys=True)


def register_app(live_server: LiveServer, *extra: str) -> App:
    """``idp clients create`` with the real console script; the callback port is never listened on."""
    base = f"http://127.0.0.1:{free_port()}"
    redirect_uri, bye = base + "/cb", base + "/bye"
    done = live_server.idp(
        "clients",
        "create",
        "--name",
        "Relying app",
        "--redirect-uri",
        redirect_uri,
        "--post-logout-redirect-uri",
        bye,
        *extra,
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    return App(made["client_id"], made["client_secret"], redirect_uri, bye)


@pytest.fixture(scope="module")
def app(live_server: LiveServer) -> App:
    return register_app(live_server)


@pytest.fixture(scope="module")
def ctx(settings: Settings) -> Iterator[Context]:
    """The live server's database, where ``make_user`` puts the people who sign in (``app`` is the
    relying app here, not the in-process one)."""
    context = Context.build(settings)
    yield context
    context.close()


@pytest.fixture
def person(make_user: Callable[..., Any]) -> Person:
    user = make_user(email=f"rp-{secrets.token_hex(4)}@example.com", name="Ada RP")
    return Person(user.id, user.email)


@pytest.fixture
def browser(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, follow_redirects=False, timeout=10) as client:
        yield client


def oauth_client(app: App, scope: str = SCOPE) -> OAuth2Client:
    return OAuth2Client(
        client_id=app.client_id,
        client_secret=app.client_secret,
        scope=scope,
        redirect_uri=app.redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
        timeout=10,
    )


@dataclass
class Authorization:
    url: str
    state: str
    nonce: str
    verifier: str


def start(client: OAuth2Client, op: dict[str, Any], **extra: str) -> Authorization:
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(12)
    url, state = client.create_authorization_url(
        op["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **extra
    )
    return Authorization(url, state, nonce, verifier)


def follow(browser: httpx.Client, response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return urljoin(str(response.url), response.headers["location"])


def walk_to_callback(
    browser: httpx.Client, app: App, authorization: Authorization, person: Person | None
) -> tuple[str, list[str]]:
    """Drive /authorize -> (/login) -> (/consent) -> the callback; the pages seen on the way."""
    seen = []
    location = follow(browser, browser.get(authorization.url))
    if urlsplit(location).path == "/login":
        assert person is not None, "asked to sign in again"
        seen.append("login")
        page = browser.get(location)
        assert page.status_code == 200
        location = follow(
            browser,
            browser.post("/login", data={**hidden_fields(page.text), "username": person.email, "password": PASSWORD}),
        )
    if urlsplit(location).path == "/consent":
        seen.append("consent")
        page = browser.get(location)
        assert page.status_code == 200
        location = follow(browser, browser.post("/consent", data={**hidden_fields(page.text), "decision": "allow"}))
    assert location.startswith(app.redirect_uri + "?"), location
    return location, seen


@dataclass
class SignedIn:
    client: OAuth2Client
    authorization: Authorization
    callback: str
    token: dict[str, Any]


def sign_in(browser: httpx.Client, app: App, op: dict[str, Any], person: Person | None) -> SignedIn:
    client = oauth_client(app)
    authorization = start(client, op)
    callback, _ = walk_to_callback(browser, app, authorization, person)
    token = client.fetch_token(
        op["token_endpoint"],
        authorization_response=callback,
        state=authorization.state,
        code_verifier=authorization.verifier,
    )
    return SignedIn(client, authorization, callback, dict(token))


def verify_id_token(jwks_client: jwt.PyJWKClient, op: dict[str, Any], app: App, token: str) -> dict[str, Any]:
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=op["id_token_signing_alg_values_supported"],
        audience=app.client_id,
        issuer=op["issuer"],
        options={"require": ["iss", "sub", "aud", "exp", "iat"]},
    )


def half_hash(alg: str, value: str) -> str:
    digest = jwt.get_algorithm_by_name(alg).compute_hash_digest(value.encode("ascii"))
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


@pytest.fixture
def signed_in(browser: httpx.Client, app: App, op: dict[str, Any], person: Person) -> SignedIn:
    return sign_in(browser, app, op, person)


def introspect(client: OAuth2Client, op: dict[str, Any], token: str) -> dict[str, Any]:
    response = client.introspect_token(op["introspection_endpoint"], token=token)
    assert response.status_code == 200, response.text
    return response.json()


# --- the code flow ------------------------------------------------------------------------------


def test_code_flow_asks_for_sign_in_and_consent_and_returns_iss(browser, app, op, person):
    client = oauth_client(app)
    authorization = start(client, op)
    query = query_of(authorization.url)
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    callback, seen = walk_to_callback(browser, app, authorization, person)
    assert seen == ["login", "consent"]
    received = query_of(callback)
    assert set(received) == {"code", "state", "iss"}
    assert received["state"] == authorization.state
    assert received["iss"] == op["issuer"]


def test_id_token_verifies_against_the_jwks(signed_in, app, op, person, jwks_client):
    token = signed_in.token
    assert token["token_type"].lower() == "bearer"
    assert token["expires_in"] == 900
    assert token["scope"].split() == SCOPE.split()
    header = jwt.get_unverified_header(token["id_token"])
    assert header["alg"] == "RS256" and header["kid"]
    claims = verify_id_token(jwks_client, op, app, token["id_token"])
    assert claims["sub"] == person.id
    assert claims["aud"] == app.client_id
    assert claims["azp"] == app.client_id
    assert claims["nonce"] == signed_in.authorization.nonce
    assert claims["at_hash"] == half_hash(header["alg"], token["access_token"])
    assert claims["email"] == person.email and claims["email_verified"] is True
    assert claims["name"] == "Ada RP"
    assert claims["amr"] == ["pwd"]
    assert claims["sid"]
    assert claims["iat"] - 5 <= claims["auth_time"] <= claims["iat"]


def test_access_token_is_an_rfc9068_jwt(signed_in, app, op, person, jwks_client):
    access_token = signed_in.token["access_token"]
    header = jwt.get_unverified_header(access_token)
    assert header["typ"].lower() in ("at+jwt", "application/at+jwt")
    signing_key = jwks_client.get_signing_key_from_jwt(access_token)
    claims = jwt.decode(
        access_token,
        signing_key.key,
        algorithms=["RS256"],
        audience=op["issuer"],
        issuer=op["issuer"],
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
    )
    assert claims["sub"] == person.id
    assert claims["client_id"] == app.client_id
    assert claims["scope"].split() == SCOPE.split()
    assert claims["exp"] - claims["iat"] == 900


def test_id_token_is_not_accepted_by_a_verifier_expecting_another_audience(signed_in, op, jwks_client):
    key = jwks_client.get_signing_key_from_jwt(signed_in.token["id_token"]).key
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(signed_in.token["id_token"], key, algorithms=["RS256"], audience="someone-else", issuer=op["issuer"])


def test_authlib_validates_the_id_token_claims(signed_in, app, op, jwks_client):
    claims_module = pytest.importorskip("authlib.oidc.core")
    token = signed_in.token["id_token"]
    key = jwks_client.get_signing_key_from_jwt(token).key
    verified = jwt.decode(token, key, algorithms=["RS256"], audience=app.client_id, issuer=op["issuer"])
    id_token = claims_module.CodeIDToken(
        verified,
        jwt.get_unverified_header(token),
        options={"iss": {"essential": True, "value": op["issuer"]}, "aud": {"essential": True, "value": app.client_id}},
        params={
            "nonce": signed_in.authorization.nonce,
            "client_id": app.client_id,
            "access_token": signed_in.token["access_token"],
        },
    )
    id_token.validate()
    tampered = claims_module.CodeIDToken(
        verified,
        jwt.get_unverified_header(token),
        params={"nonce": "another-nonce", "client_id": app.client_id},
    )
    with pytest.raises(InvalidClaimError, match="nonce"):
        tampered.validate()


def test_the_code_cannot_be_used_twice(signed_in, app, op):
    client = oauth_client(app)
    with pytest.raises(OAuthError) as failure:
        client.fetch_token(
            op["token_endpoint"],
            authorization_response=signed_in.callback,
            state=signed_in.authorization.state,
            code_verifier=signed_in.authorization.verifier,
        )
    assert failure.value.error == "invalid_grant"
    # ... and what the first use issued is revoked.
    assert introspect(client, op, signed_in.token["access_token"]) == {"active": False}
    assert introspect(client, op, signed_in.token["refresh_token"]) == {"active": False}


def test_a_wrong_code_verifier_is_refused(browser, app, op, person):
    client = oauth_client(app)
    authorization = start(client, op)
    callback, _ = walk_to_callback(browser, app, authorization, person)
    with pytest.raises(OAuthError) as failure:
        client.fetch_token(
            op["token_endpoint"],
            authorization_response=callback,
            state=authorization.state,
            code_verifier=secrets.token_urlsafe(48),
        )
    assert failure.value.error == "invalid_grant"


# --- userinfo, refresh, revocation --------------------------------------------------------------


def test_userinfo_with_authlib(signed_in, op, person):
    response = signed_in.client.get(op["userinfo_endpoint"])
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["sub"] == person.id
    assert info["email"] == person.email
    assert info["email_verified"] is True
    assert info["name"] == "Ada RP"


def test_refresh_rotates_and_reuse_revokes_the_family(signed_in, app, op, jwks_client, person):
    client = signed_in.client
    first = signed_in.token
    second = dict(client.refresh_token(op["token_endpoint"], refresh_token=first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    claims = verify_id_token(jwks_client, op, app, second["id_token"])
    assert claims["sub"] == person.id
    assert claims["at_hash"] == half_hash("RS256", second["access_token"])
    assert client.get(op["userinfo_endpoint"]).json()["sub"] == person.id

    with pytest.raises(OAuthError) as failure:
        oauth_client(app).refresh_token(op["token_endpoint"], refresh_token=first["refresh_token"])
    assert failure.value.error == "invalid_grant"
    # Presenting the rotated-away token revoked the whole family, including the newest token.
    with pytest.raises(OAuthError) as failure:
        oauth_client(app).refresh_token(op["token_endpoint"], refresh_token=second["refresh_token"])
    assert failure.value.error == "invalid_grant"
    assert introspect(client, op, second["refresh_token"]) == {"active": False}


def test_revoke_refresh_token(signed_in, app, op):
    client = signed_in.client
    assert introspect(client, op, signed_in.token["refresh_token"])["active"] is True
    response = client.revoke_token(
        op["revocation_endpoint"], token=signed_in.token["refresh_token"], token_type_hint="refresh_token"
    )
    assert response.status_code == 200
    assert introspect(client, op, signed_in.token["refresh_token"]) == {"active": False}
    with pytest.raises(OAuthError) as failure:
        oauth_client(app).refresh_token(op["token_endpoint"], refresh_token=signed_in.token["refresh_token"])
    assert failure.value.error == "invalid_grant"
    # Revoking again, or revoking nonsense, is still 200 (RFC 7009 §2.2).
    again = client.revoke_token(op["revocation_endpoint"], token=signed_in.token["refresh_token"])
    assert again.status_code == 200
    assert client.revoke_token(op["revocation_endpoint"], token="not-a-token").status_code == 200


def test_revoke_access_token(signed_in, op, person):
    client = signed_in.client
    details = introspect(client, op, signed_in.token["access_token"])
    assert details["active"] is True and details["sub"] == person.id
    response = client.revoke_token(
        op["revocation_endpoint"], token=signed_in.token["access_token"], token_type_hint="access_token"
    )
    assert response.status_code == 200
    assert introspect(client, op, signed_in.token["access_token"]) == {"active": False}
    userinfo = client.get(op["userinfo_endpoint"])
    assert userinfo.status_code == 401
    assert 'error="invalid_token"' in userinfo.headers["www-authenticate"]


# --- logout and single sign-on ------------------------------------------------------------------


def test_logout_redirects_exactly_and_ends_single_sign_on(browser, signed_in, app, op):
    state = secrets.token_urlsafe(8)
    response = browser.get(
        op["end_session_endpoint"],
        params={
            "id_token_hint": signed_in.token["id_token"],
            "post_logout_redirect_uri": app.post_logout_redirect_uri,
            "state": state,
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{app.post_logout_redirect_uri}?state={state}"
    assert introspect(signed_in.client, op, signed_in.token["refresh_token"]) == {"active": False}

    client = oauth_client(app)
    location = follow(browser, browser.get(start(client, op).url))
    assert urlsplit(location).path == "/login"


def test_a_second_app_signs_in_without_a_password(live_server, browser, signed_in, app, op, jwks_client, person):
    second = register_app(live_server, "--first-party")
    client = oauth_client(second)
    authorization = start(client, op)
    callback, seen = walk_to_callback(browser, second, authorization, None)
    assert seen == []
    token = client.fetch_token(
        op["token_endpoint"],
        authorization_response=callback,
        state=authorization.state,
        code_verifier=authorization.verifier,
    )
    first_claims = verify_id_token(jwks_client, op, app, signed_in.token["id_token"])
    claims = verify_id_token(jwks_client, op, second, token["id_token"])
    assert claims["sub"] == person.id
    assert claims["sid"] == first_claims["sid"]
    assert claims["auth_time"] == first_claims["auth_time"]
    assert claims["nonce"] == authorization.nonce


def test_prompt_login_asks_for_the_password_again(browser, signed_in, app, op, person):
    client = oauth_client(app)
    authorization = start(client, op, prompt="login")
    _, seen = walk_to_callback(browser, app, authorization, person)
    assert seen == ["login"]


def test_cli_made_client_secret_is_required(app, op):
    impostor = OAuth2Client(client_id=app.client_id, client_secret="wrong-" + os.urandom(8).hex(), timeout=10)
    response = impostor.introspect_token(op["introspection_endpoint"], token="anything")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].lower().startswith("basic")


# --- claims by scope ------------------------------------------------------------------------------


def scoped_sign_in(
    browser: httpx.Client, app: App, op: dict[str, Any], person: Person, scope: str, **extra: str
) -> tuple[OAuth2Client, dict[str, Any]]:
    """Authlib's client signed in for ``scope``, with ``extra`` authorization parameters: it and its token."""
    client = oauth_client(app, scope)
    authorization = start(client, op, **extra)
    callback, _ = walk_to_callback(browser, app, authorization, person)
    token = client.fetch_token(
        op["token_endpoint"],
        authorization_response=callback,
        state=authorization.state,
        code_verifier=authorization.verifier,
    )
    return client, dict(token)


def test_profile_and_groups_claims_reach_authlib_by_scope(browser, live_server, op, jwks_client, ctx, make_user):
    """OIDC Core §5.4: ``profile`` releases the names, username, time zone and language a person
    has (none they lack), ``groups`` the groups they are in; both in the ID token and at UserInfo."""
    app = register_app(live_server, "--scope", "openid profile email groups")
    user = make_user(email=f"claims-{secrets.token_hex(4)}@example.com", name="Ada Lovelace")
    with ctx.db.begin() as db:
        person = db.get(User, user.id)
        assert person is not None
        person.given_name, person.family_name, person.preferred_username = (
            "Ada",
            "Lovelace",
            f"ada{secrets.token_hex(3)}",
        )
        person.zoneinfo, person.locale = "Europe/London", "fa"
        db.add_all([UserGroup(user_id=user.id, name="staff"), UserGroup(user_id=user.id, name="accounting")])
    client, token = scoped_sign_in(browser, app, op, Person(user.id, user.email), "openid profile groups")
    expected = {
        "name": "Ada Lovelace",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "preferred_username": person.preferred_username,
        "zoneinfo": "Europe/London",
        "locale": "fa",
        "groups": ["accounting", "staff"],
    }
    claims = verify_id_token(jwks_client, op, app, token["id_token"])
    assert {name: claims.get(name) for name in expected} == expected
    assert "email" not in claims, "email was not asked for"
    userinfo = client.get(op["userinfo_endpoint"]).json()
    assert {name: userinfo.get(name) for name in expected} == expected and "email" not in userinfo
    assert set(expected) <= set(op["claims_supported"]) and "groups" in op["scopes_supported"]


def test_a_person_without_profile_values_gets_no_empty_claims(browser, live_server, op, jwks_client, make_user):
    app = register_app(live_server, "--scope", "openid profile groups")
    user = make_user(email=f"bare-{secrets.token_hex(4)}@example.com")
    client, token = scoped_sign_in(browser, app, op, Person(user.id, user.email), "openid profile groups")
    userinfo = client.get(op["userinfo_endpoint"]).json()
    assert userinfo["groups"] == []
    assert not {"given_name", "family_name", "preferred_username", "zoneinfo", "locale"} & set(userinfo)
    assert "given_name" not in verify_id_token(jwks_client, op, app, token["id_token"])


def give_profile(ctx: Context, user_id: str, **values: Any) -> None:
    with ctx.db.begin() as db:
        person = db.get(User, user_id)
        assert person is not None
        for name, value in values.items():
            setattr(person, name, value)


ADDRESS = {
    "formatted": "1 Main St\n10115 Berlin\nGermany",
    "street_address": "1 Main St",
    "locality": "Berlin",
    "postal_code": "10115",
    "country": "Germany",
}
PICTURE = "https://pictures.example/ada.png"


def test_address_scope_and_picture_reach_authlib(browser, live_server, op, jwks_client, ctx, make_user):
    """OIDC Core §5.4: ``address`` releases the address object, ``profile`` the picture among the
    other profile claims; discovery lists both."""
    app = register_app(live_server, "--scope", "openid profile address")
    user = make_user(email=f"address-{secrets.token_hex(4)}@example.com")
    give_profile(ctx, user.id, address=ADDRESS, picture=PICTURE)
    client, token = scoped_sign_in(browser, app, op, Person(user.id, user.email), "openid profile address")
    claims = verify_id_token(jwks_client, op, app, token["id_token"])
    userinfo = client.get(op["userinfo_endpoint"]).json()
    for released in (claims, userinfo):
        assert released["address"] == ADDRESS and released["picture"] == PICTURE
    assert "address" in op["scopes_supported"]
    assert {"address", "picture"} <= set(op["claims_supported"])
    assert op["claims_parameter_supported"] is True

    bare = register_app(live_server, "--scope", "openid profile")
    client, token = scoped_sign_in(browser, bare, op, Person(user.id, user.email), "openid profile")
    assert client.get(op["userinfo_endpoint"]).json()["picture"] == PICTURE
    assert "address" not in client.get(op["userinfo_endpoint"]).json(), "the address scope was not asked for"


def test_the_claims_parameter_adds_claims_to_the_id_token_and_userinfo_apart(
    browser, live_server, op, jwks_client, ctx, make_user
):
    """OIDC Core §5.5: claims asked for by name reach the response they were asked for, besides
    those of the scopes; unknown ones and ones the person has no value for are left out; a refresh
    keeps them."""
    app = register_app(live_server, "--scope", "openid offline_access profile email address")
    user = make_user(email=f"asked-{secrets.token_hex(4)}@example.com", name="Ada Asked")
    give_profile(ctx, user.id, address=ADDRESS, zoneinfo="Europe/Berlin")
    asked = {
        "id_token": {"email": {"essential": True}, "address": None, "nickname": None, "zoneinfo": None},
        "userinfo": {"name": None, "picture": {"essential": True}, "unknown_claim": {"value": 1}},
    }
    person = Person(user.id, user.email)
    client, token = scoped_sign_in(browser, app, op, person, "openid offline_access", claims=json.dumps(asked))
    claims = verify_id_token(jwks_client, op, app, token["id_token"])
    assert claims["email"] == user.email and claims["address"] == ADDRESS and claims["zoneinfo"] == "Europe/Berlin"
    assert not {"email_verified", "name", "nickname", "picture"} & set(claims), "only what was asked for"
    userinfo = client.get(op["userinfo_endpoint"]).json()
    assert userinfo == {"sub": user.id, "name": "Ada Asked"}, "no picture: the person has none"

    refreshed = client.refresh_token(op["token_endpoint"], refresh_token=token["refresh_token"])
    again = verify_id_token(jwks_client, op, app, refreshed["id_token"])
    assert again["address"] == ADDRESS and again["email"] == user.email
    assert client.get(op["userinfo_endpoint"]).json() == {"sub": user.id, "name": "Ada Asked"}


def test_claims_asked_for_by_name_are_only_those_the_app_may_have_and_the_person_agreed_to(
    browser, live_server, op, jwks_client, ctx, make_user
):
    """OIDC Core §3.1.2.4: the person decides before anything about them is released. An app
    allowed only ``openid`` gets no email by naming it; an app allowed ``email`` that the person
    agreed to for ``openid`` alone asks again, on a consent page that names the email address."""
    narrow = register_app(live_server, "--scope", "openid offline_access")
    user = make_user(email=f"narrow-{secrets.token_hex(4)}@example.com", name="Ada Narrow")
    asked = {"id_token": {"email": {"essential": True}}, "userinfo": {"email": None, "name": None}}
    client, token = scoped_sign_in(browser, narrow, op, Person(user.id, user.email), "openid", claims=json.dumps(asked))
    claims = verify_id_token(jwks_client, op, narrow, token["id_token"])
    assert not {"email", "name"} & set(claims), claims
    assert client.get(op["userinfo_endpoint"]).json() == {"sub": user.id}

    wide = register_app(live_server, "--scope", "openid email")
    plain = oauth_client(wide, "openid")
    _, seen = walk_to_callback(browser, wide, start(plain, op), Person(user.id, user.email))
    assert seen == ["consent"], "agreed to openid alone"
    authorization = start(plain, op, claims=json.dumps(asked))
    location = follow(browser, browser.get(authorization.url))
    assert urlsplit(location).path == "/consent", "the email address was never agreed to"
    page = browser.get(location)
    assert "See your email address" in page.text, page.text
    location = follow(browser, browser.post("/consent", data={**hidden_fields(page.text), "decision": "allow"}))
    token = plain.fetch_token(
        op["token_endpoint"], authorization_response=location, state=authorization.state,
        code_verifier=authorization.verifier,
    )  # fmt: skip
    assert verify_id_token(jwks_client, op, wide, token["id_token"])["email"] == user.email


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ("{not json", "claims is not a JSON object"),
        ("[]", "claims is not a JSON object"),
        ('{"id_token": []}', "claims.id_token must be a JSON object"),
        ('{"userinfo": {"email": true}}', "claims.userinfo.email must be null or a JSON object"),
        ('{"id_token": {"email": {"essential": "yes"}}}', "claims.id_token.email.essential must be true or false"),
        ('{"id_token": {"acr": {"values": "2"}}}', "claims.id_token.acr.values must be a non-empty JSON array"),
        ('{"id_token": {"sub": {"value": {"a": 1}}}}', "claims.id_token.sub.value must be a string"),
        ('{"userinfo": {"sub": {"value": 42}}}', "claims.userinfo.sub.value must be a string"),
        ('{"id_token": {"sub": {"value": true}}}', "claims.id_token.sub.value must be a string"),
        ('{"id_token": {"sub": {"value": "a"}}, "userinfo": {"sub": {"value": "b"}}}', "two different sub"),
        ('{"id_token": {"email": null}}' + " " * 4000, "claims is longer than 4000 characters"),
        ('{"id_token": {"sub": {"value": NaN}}}', "claims is not a JSON object"),
        ('{"userinfo": {"email": {"values": [1e999]}}}', "claims is not a JSON object"),
    ],
)
def test_a_malformed_claims_parameter_is_an_invalid_request_redirect(browser, app, op, claims, says):
    client = oauth_client(app)
    authorization = start(client, op, claims=claims)
    location = follow(browser, browser.get(authorization.url))
    assert location.startswith(app.redirect_uri + "?"), location
    received = query_of(location)
    assert received["error"] == "invalid_request" and received["state"] == authorization.state
    assert says in received["error_description"]


def test_a_sub_asked_for_by_value_must_be_the_person_signed_in(browser, signed_in, app, op, person, make_user):
    """OIDC Core §5.5.1: no answer about another person than the ``sub`` asked for; with
    ``prompt=none`` that is ``login_required``, otherwise the person is asked to sign in."""
    other = make_user(email=f"other-{secrets.token_hex(4)}@example.com")
    asked = json.dumps({"id_token": {"sub": {"value": other.id}}})
    client = oauth_client(app)
    authorization = start(client, op, claims=asked, prompt="none")
    received = query_of(follow(browser, browser.get(authorization.url)))
    assert received["error"] == "login_required"

    authorization = start(client, op, claims=asked)
    location = follow(browser, browser.get(authorization.url))
    assert urlsplit(location).path == "/login"

    mine = json.dumps({"id_token": {"sub": {"value": person.id}}})
    authorization = start(client, op, claims=mine, prompt="none")
    received = query_of(follow(browser, browser.get(authorization.url)))
    assert "code" in received, received


def test_an_essential_acr_a_one_factor_person_cannot_reach_is_access_denied(browser, signed_in, app, op, person):
    """OIDC Core §5.5.1.1: a person without a second factor cannot reach acr 2, which fails."""
    client = oauth_client(app)
    asked = json.dumps({"id_token": {"acr": {"essential": True, "values": ["2"]}}})
    authorization = start(client, op, claims=asked)
    received = query_of(follow(browser, browser.get(authorization.url)))
    assert received["error"] == "access_denied" and "acr" in received["error_description"]
    reachable = json.dumps({"id_token": {"acr": {"essential": True, "values": ["1", "2"]}}})
    authorization = start(client, op, claims=reachable, prompt="none")
    assert "code" in query_of(follow(browser, browser.get(authorization.url)))


def test_the_consent_page_gives_no_code_to_a_sign_in_short_of_the_essential_acr(browser, app, op, person):
    """A request waiting at the sign-in page, answered on its consent page by a one-factor session
    made without it (the sign-in page with no request), fails as ``/authorize`` would fail it."""
    client = oauth_client(app)
    asked = json.dumps({"id_token": {"acr": {"essential": True, "values": ["2"]}}})
    authorization = start(client, op, claims=asked)
    waiting = follow(browser, browser.get(authorization.url))
    assert urlsplit(waiting).path == "/login"
    page = browser.get("/login")
    signed_in = browser.post(
        "/login", data={**hidden_fields(page.text), "username": person.email, "password": PASSWORD}
    )
    assert signed_in.status_code == 303 and "request" not in signed_in.headers["location"]

    consent = browser.get("/consent?" + urlsplit(waiting).query)
    assert consent.status_code == 200, consent.text
    answered = follow(browser, browser.post("/consent", data={**hidden_fields(consent.text), "decision": "allow"}))
    received = query_of(answered)
    assert answered.startswith(app.redirect_uri + "?") and "code" not in received, received
    assert received["error"] == "access_denied" and received["state"] == authorization.state

    again = browser.post("/consent", data={**hidden_fields(consent.text), "decision": "allow"})
    assert "code=" not in again.headers.get("location", ""), "the refused request is over"
