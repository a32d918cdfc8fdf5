"""The account JSON API under ``/api/account``: bearer access tokens, RFC 9457 problems, OpenAPI 3.1."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from sqlalchemy import select
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from idp.accounts.users import disable_user
from idp.app import create_app
from idp.storage import AuditEvent, User

from .conftest import PASSWORD, TEST_ISSUER, make_settings
from .flows import hidden_fields, in_arabic_indic, in_persian, tokens_for
from .test_account import PHONE_REMOVED, emailed, events, sms_code, sms_texts
from .test_rate_limits import new_address

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
NEW_PASSWORD = "a quite different passphrase 42"
PROBLEM_TYPE = "application/problem+json"


# --- helpers -------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx.Response) -> dict[str, str]:
    """The auth-params of a ``WWW-Authenticate: Bearer ...`` challenge (RFC 6750 §3)."""
    scheme, _, rest = response.headers["www-authenticate"].partition(" ")
    assert scheme == "Bearer", response.headers
    return {name: value.strip('"') for name, value in re.findall(r'(\w+)=("[^"]*"|[^,]*)', rest)}


def assert_problem(response: httpx.Response, status: int, name: str | None) -> dict[str, Any]:
    """An RFC 9457 problem: the media type, and ``type``, ``title``, ``status``, ``detail``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_TYPE
    body = response.json()
    assert body["type"] == (f"{TEST_ISSUER}/problems/{name}" if name else "about:blank")
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def assert_invalid_token(response: httpx.Response) -> None:
    assert_problem(response, 401, "invalid-token")
    assert challenge(response)["error"] == "invalid_token"


def own_token(ctx, key: RSAKey | None = None, **claims: Any) -> str:  # type: ignore[no-untyped-def]
    """An access token shaped like the provider's, signed by its active key unless ``key`` is given."""
    active = ctx.keyring.snapshot().active
    stamp = int(time.time())
    body = {
        "iss": TEST_ISSUER,
        "aud": TEST_ISSUER,
        "client_id": "c",
        "scope": "openid",
        "jti": secrets.token_urlsafe(16),
        "iat": stamp,
        "exp": stamp + 300,
        **claims,
    }
    signer = key or active.key
    return jwt.encode({"alg": "RS256", "kid": signer.kid if key else active.kid, "typ": "at+jwt"}, body, signer)


def sign_in(browser: TestClient, email: str, password: str = PASSWORD) -> None:
    page = browser.get("/login")
    response = browser.post("/login", data={**hidden_fields(page.text), "username": email, "password": password})
    assert response.status_code == 303, response.text


def random_phone() -> str:
    return f"+98912{secrets.randbelow(10_000_000):07d}"


def adding(phone: str) -> dict[str, str]:
    """The body that adds ``phone``: adding a number asks for the current password."""
    return {"phone": phone, "current_password": PASSWORD}


class Documented:
    """Checks answers against the OpenAPI document the app serves: the status must be one the
    operation documents, and the body must match the schema documented for it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            _, kind, name = node["$ref"].removeprefix("#/").split("/")
            node = self.document["components"][kind][name]
        return node

    def check(self, response: httpx.Response, path: str, method: str) -> None:
        responses = self.document["paths"][path][method]["responses"]
        assert str(response.status_code) in responses, (path, method, response.status_code)
        documented = self._resolve(responses[str(response.status_code)])
        if "content" not in documented:
            assert not response.content
            return
        media_type = response.headers["content-type"].split(";")[0]
        schema = documented["content"][media_type]["schema"]
        validator = Draft202012Validator({"allOf": [schema], "components": self.document["components"]})
        validator.validate(response.json())


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def person(make_user):  # type: ignore[no-untyped-def]
    return make_user(name="Ada Api")


@pytest.fixture
def client(make_client):  # type: ignore[no-untyped-def]
    return make_client(first_party=True)


@pytest.fixture
def tokens(browsers, client, person) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Tokens for ``person`` from the authorization code flow in a Chrome browser."""
    return tokens_for(browsers(), client, person)


@pytest.fixture
def token(tokens) -> str:  # type: ignore[no-untyped-def]
    return tokens["access_token"]


@pytest.fixture(scope="module")
def documented(app) -> Documented:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url=TEST_ISSUER) as http:
        return Documented(http.get("/api/account/openapi.json").json())


@pytest.fixture
def sms_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="idp.messages")
    return caplog


def session_of(tokens: dict[str, Any]) -> str:
    """The SSO session the tokens were issued in: the ID token's ``sid``."""
    return pyjwt.decode(tokens["id_token"], options={"verify_signature": False})["sid"]


# --- profile -------------------------------------------------------------------------------------


def test_get_returns_the_profile(http, token, person, documented):
    response = http.get("/api/account", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "sub": person.id,
        "email": person.email,
        "email_verified": True,
        "phone": None,
        "phone_verified": False,
        "name": "Ada Api",
        "given_name": None,
        "family_name": None,
        "preferred_username": None,
        "locale": None,
        "zoneinfo": None,
        "picture": None,
        "address": None,
        "mfa_method": None,
    }
    documented.check(response, "/api/account", "get")


def test_patch_sets_the_picture_and_the_address_and_removes_them(http, ctx, token, person, documented):
    address = {"street_address": "1 Main St", "locality": "Berlin", "postal_code": "10115", "country": "Germany"}
    body = {"picture": "https://pictures.example/ada.png", "address": address}
    response = http.patch("/api/account", headers=bearer(token), json=body)
    assert response.status_code == 200, response.text
    documented.check(response, "/api/account", "patch")
    shown = response.json()
    assert shown["picture"] == "https://pictures.example/ada.png"
    assert shown["address"] == {"formatted": "1 Main St\n10115 Berlin\nGermany", **address}
    assert events(ctx, person.id, "profile_updated")[-1].detail == {"fields": ["picture", "address"]}

    own = {"formatted": "Somewhere far", "country": "Iran"}
    replaced = http.patch("/api/account", headers=bearer(token), json={"address": own}).json()
    assert replaced["address"] == own, "the address sent replaces the one kept, its own formatted kept"
    assert replaced["picture"] == "https://pictures.example/ada.png", "what was not sent stays"

    loopback = {"picture": "http://127.0.0.1:8000/me.png", "address": {}}
    cleared = http.patch("/api/account", headers=bearer(token), json=loopback).json()
    assert cleared["picture"] == "http://127.0.0.1:8000/me.png" and cleared["address"] is None


@pytest.mark.parametrize(
    ("body", "name", "pointers"),
    [
        ({"picture": "http://pictures.example/a.png"}, "invalid-picture", None),
        ({"picture": "data:image/png;base64,AAAA"}, "invalid-picture", None),
        ({"address": {"locality": "Ber\u0000lin"}}, "invalid-body", ["/address/locality"]),
        ({"address": {"locality": 5, "planet": "Mars"}}, "invalid-body", ["/address/planet", "/address/locality"]),
        ({"address": {"postal_code": "1" * 21}}, "invalid-body", ["/address/postal_code"]),
        ({"address": "1 Main St"}, "invalid-body", ["/address"]),
        ({"address": None}, "invalid-body", ["/address"]),
        ({"address": {"region": "Ber\u202elin"}}, "invalid-address", None),
    ],
)
def test_patch_refuses_a_bad_picture_or_address(http, token, body, name, pointers, documented):
    response = http.patch("/api/account", headers=bearer(token), json={**body, "name": "Changed"})
    problem = assert_problem(response, 422, name)
    if pointers is not None:
        assert [error["pointer"] for error in problem["errors"]] == pointers
    documented.check(response, "/api/account", "patch")
    assert http.get("/api/account", headers=bearer(token)).json()["name"] == "Ada Api"


def test_patch_changes_the_name_and_an_empty_one_removes_it(http, ctx, token, person, client, documented):
    response = http.patch("/api/account", headers=bearer(token), json={"name": "Ada Lovelace"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Ada Lovelace"
    documented.check(response, "/api/account", "patch")
    assert http.get("/api/account", headers=bearer(token)).json()["name"] == "Ada Lovelace"
    assert http.patch("/api/account", headers=bearer(token), json={"name": ""}).json()["name"] is None
    updated = events(ctx, person.id, "profile_updated")
    assert len(updated) == 2 and updated[-1].client_id == client.client_id


def test_patch_sets_the_language_of_the_persons_messages(http, ctx, token, person, sms_log, documented):
    assert http.get("/api/account", headers=bearer(token)).json()["locale"] is None
    response = http.patch("/api/account", headers=bearer(token), json={"locale": "fa"})
    assert response.status_code == 200, response.text
    assert response.json()["locale"] == "fa"
    documented.check(response, "/api/account", "patch")
    assert events(ctx, person.id, "profile_updated")[-1].detail == {"fields": ["locale"]}
    phone = random_phone()
    assert http.post("/api/account/phone", headers=bearer(token), json=adding(phone)).status_code == 202
    sms_code(ctx, sms_log, phone)
    (text,) = sms_texts(sms_log, phone)
    assert "کد" in text and "Your code" not in text, text


@pytest.mark.parametrize("locale", ["", "fa_IR", "en fa", "-fa", "fa--IR", "x" * 17])
def test_patch_refuses_what_is_not_a_language_tag(http, token, documented, locale):
    response = http.patch("/api/account", headers=bearer(token), json={"locale": locale})
    name = "invalid-body" if len(locale) > 16 else "invalid-language"
    problem = assert_problem(response, 422, name)
    documented.check(response, "/api/account", "patch")
    if name == "invalid-language":
        assert "like en, fa or fa-IR" in problem["detail"]
    assert http.get("/api/account", headers=bearer(token)).json()["locale"] is None


def test_patch_keeps_any_language_tag_and_speaks_the_nearest(http, token, documented, ctx, sms_log):
    """The ``locale`` claim is the person's BCP 47 tag (OIDC Core §5.1), kept as given; what idp
    sends them is in the nearest language it speaks."""
    response = http.patch("/api/account", headers=bearer(token), json={"locale": "de-AT"})
    assert response.status_code == 200 and response.json()["locale"] == "de-AT"
    documented.check(response, "/api/account", "patch")
    response = http.patch("/api/account", headers=bearer(token), json={"locale": "fa-IR"})
    assert response.json()["locale"] == "fa-IR"
    phone = random_phone()
    assert http.post("/api/account/phone", headers=bearer(token), json=adding(phone)).status_code == 202
    sms_code(ctx, sms_log, phone)
    (text,) = sms_texts(sms_log, phone)
    assert "کد" in text and "Your code" not in text, text


def test_patch_refuses_a_name_with_control_characters(http, token, documented):
    response = http.patch("/api/account", headers=bearer(token), json={"name": "Ada\u001b[2J"})
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/invalid-name")
    documented.check(response, "/api/account", "patch")
    assert http.get("/api/account", headers=bearer(token)).json()["name"] == "Ada Api"


def test_patch_with_no_member_changes_nothing(http, token):
    response = http.patch("/api/account", headers=bearer(token), json={})
    assert response.status_code == 200
    assert response.json()["name"] == "Ada Api"


def test_patch_changes_the_profile_and_only_what_it_names(http, ctx, token, person, client, documented):
    username = f"ada-{secrets.token_hex(4)}"
    body = {"given_name": "Ada", "family_name": "Lovelace", "preferred_username": f" {username} ", "zoneinfo": "UTC"}
    response = http.patch("/api/account", headers=bearer(token), json=body)
    assert response.status_code == 200, response.text
    documented.check(response, "/api/account", "patch")
    profile = response.json()
    assert (profile["given_name"], profile["family_name"]) == ("Ada", "Lovelace")
    assert (profile["preferred_username"], profile["zoneinfo"], profile["name"]) == (username, "UTC", "Ada Api")
    updated = events(ctx, person.id, "profile_updated")
    assert updated[-1].detail == {"fields": ["given_name", "family_name", "preferred_username", "zoneinfo"]}
    assert updated[-1].client_id == client.client_id

    again = http.patch("/api/account", headers=bearer(token), json={"preferred_username": username})
    assert again.status_code == 200
    assert len(events(ctx, person.id, "profile_updated")) == len(updated), "no change, no event"
    cleared = http.patch("/api/account", headers=bearer(token), json={"zoneinfo": "", "preferred_username": ""})
    assert (cleared.json()["zoneinfo"], cleared.json()["preferred_username"]) == (None, None)
    assert cleared.json()["given_name"] == "Ada"


def test_patch_refuses_a_username_another_person_has(http, ctx, token, person, make_user, documented):
    other = make_user()
    taken = f"taken-{secrets.token_hex(4)}"
    with ctx.db.begin() as db:
        db.get(User, other.id).preferred_username = taken
    response = http.patch("/api/account", headers=bearer(token), json={"preferred_username": taken, "name": "Ada"})
    problem = assert_problem(response, 409, "username-taken")
    documented.check(response, "/api/account", "patch")
    assert other.id not in json.dumps(problem) and other.email not in json.dumps(problem)
    profile = http.get("/api/account", headers=bearer(token)).json()
    assert (profile["preferred_username"], profile["name"]) == (None, "Ada Api"), "nothing is saved"


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"zoneinfo": "Mars/Olympus_Mons"}, "unknown-time-zone"),
        ({"zoneinfo": "europe/berlin"}, "unknown-time-zone"),
        ({"preferred_username": "ada\u0007"}, "invalid-username"),
        ({"given_name": "Ada\u202e"}, "invalid-name"),
        ({"family_name": "x" * 201}, "invalid-body"),
        ({"preferred_username": "x" * 151}, "invalid-body"),
    ],
)
def test_patch_refuses_a_bad_profile_value(http, token, body, name, documented):
    response = http.patch("/api/account", headers=bearer(token), json={**body, "name": "Changed"})
    assert_problem(response, 422, name)
    documented.check(response, "/api/account", "patch")
    assert http.get("/api/account", headers=bearer(token)).json()["name"] == "Ada Api"


def test_asking_for_usernames_spends_the_verification_budget(base_environ, make_user, make_client, documented):
    """Whether a username is taken is all a refusal tells; it cannot be asked without end."""
    application = create_app(make_settings(base_environ, IDP_RATE_LIMITING="on", IDP_RATE_LIMIT_VERIFICATION="2/hour"))
    stem = f"u{secrets.token_hex(4)}-"
    try:
        with TestClient(
            application, base_url=TEST_ISSUER, follow_redirects=False, client=(new_address(), 50000)
        ) as http:
            token = tokens_for(http, make_client(first_party=True), make_user())["access_token"]
            answers = [
                http.patch("/api/account", headers=bearer(token), json={"preferred_username": f"{stem}{n}"})
                for n in range(3)
            ]
            assert [answer.status_code for answer in answers] == [200, 200, 429]
            assert_problem(answers[-1], 429, "rate-limited")
            documented.check(answers[-1], "/api/account", "patch")
            same = {"preferred_username": f"{stem}1", "name": "Ada"}
            assert http.patch("/api/account", headers=bearer(token), json=same).status_code == 200
    finally:
        application.state.ctx.close()


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({"name": 5}, ["/name"]),
        ({"name": None}, ["/name"]),
        ({"name": ["Ada"]}, ["/name"]),
        ({"email": "me@example.com"}, ["/email"]),
        ({"name": "Ada", "a/b": 1, "c~d": 2}, ["/a~1b", "/c~0d"]),
        ({"name": "x" * 201}, ["/name"]),
        ({"name": "Ada\u0000"}, ["/name"]),
        ({"name": "\ud800"}, ["/name"]),
        (["name"], [""]),
        ("Ada", [""]),
        (None, [""]),
    ],
)
def test_patch_with_unknown_members_or_wrong_types_is_422(http, token, body, pointers, documented):
    response = http.patch(
        "/api/account", headers={**bearer(token), "Content-Type": "application/json"}, content=json.dumps(body)
    )
    problem = assert_problem(response, 422, "invalid-body")
    assert [error["pointer"] for error in problem["errors"]] == pointers
    documented.check(response, "/api/account", "patch")
    assert http.get("/api/account", headers=bearer(token)).json()["name"] == "Ada Api"


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"name": "a"} x',
        b'{"name": "a", "name": "b"}',
        b'{"name": "\xff"}',
        b"[" * 50_000,
        b"",
        rb'{"name": "Ada", "\ud800": "x"}',
        rb'{"name": "Ada", "address": {"\udfff": "x"}}',
        rb'{"name": "Ada", "\u0000": "x"}',
    ],
)
def test_malformed_json_is_400(http, token, raw, documented):
    response = http.patch("/api/account", headers={**bearer(token), "Content-Type": "application/json"}, content=raw)
    assert_problem(response, 400, "malformed-body")
    documented.check(response, "/api/account", "patch")


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain", "application/jsonx"])
def test_a_body_that_is_not_json_is_415(http, token, content_type, documented):
    headers = bearer(token) | ({"Content-Type": content_type} if content_type else {})
    response = http.patch("/api/account", headers=headers, content=b'{"name": "Eve"}')
    assert_problem(response, 415, "unsupported-media-type")
    documented.check(response, "/api/account", "patch")


def test_json_with_a_charset_parameter_is_accepted(http, token):
    headers = bearer(token) | {"Content-Type": "application/json; charset=utf-8"}
    response = http.patch("/api/account", headers=headers, content=json.dumps({"name": "Ada"}).encode())
    assert response.status_code == 200, response.text


def test_a_body_over_64_kib_is_413(http, token, documented):
    body = json.dumps({"name": "x" * (64 * 1024)}).encode()
    response = http.patch("/api/account", headers={**bearer(token), "Content-Type": "application/json"}, content=body)
    assert_problem(response, 413, "body-too-large")
    documented.check(response, "/api/account", "patch")

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    streamed = http.patch(
        "/api/account", headers={**bearer(token), "Content-Type": "application/json"}, content=chunks()
    )
    assert_problem(streamed, 413, "body-too-large")


# --- bearer tokens -------------------------------------------------------------------------------


def test_no_token_is_401_with_a_bare_challenge(http, documented):
    """RFC 6750 §3.1: without authentication information the challenge carries no error code."""
    for response in (http.get("/api/account"), http.get("/api/account", headers={"Authorization": "Basic eDp5"})):
        assert_problem(response, 401, "invalid-token")
        assert challenge(response) == {"realm": "idp"}
        documented.check(response, "/api/account", "get")


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "x" * 9000, " "])
def test_a_garbage_token_is_401(http, garbage):
    assert_invalid_token(http.get("/api/account", headers={"Authorization": f"Bearer {garbage}"}))


def test_an_expired_token_is_401(http, ctx, person):
    stamp = int(time.time())
    assert_invalid_token(
        http.get("/api/account", headers=bearer(own_token(ctx, sub=person.id, iat=stamp - 900, exp=stamp - 10)))
    )


def test_a_revoked_token_is_401(http, token, client):
    assert http.get("/api/account", headers=bearer(token)).status_code == 200
    revoked = http.post("/revoke", data={"token": token, "token_type_hint": "access_token"}, auth=client.auth)
    assert revoked.status_code == 200, revoked.text
    assert_invalid_token(http.get("/api/account", headers=bearer(token)))


def test_a_token_signed_by_another_key_is_401(http, ctx, tokens, person):
    grant_jti = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    stranger = RSAKey.generate_key(2048, auto_kid=True)
    assert_invalid_token(
        http.get("/api/account", headers=bearer(own_token(ctx, stranger, sub=person.id, jti=grant_jti)))
    )


def test_an_id_token_is_not_an_access_token(http, tokens):
    assert_invalid_token(http.get("/api/account", headers=bearer(tokens["id_token"])))


def test_a_token_for_another_audience_is_401(http, ctx, tokens, person):
    grant_jti = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    assert http.get("/api/account", headers=bearer(own_token(ctx, sub=person.id, jti=grant_jti))).status_code == 200
    other = own_token(ctx, sub=person.id, jti=grant_jti, aud="https://api.example")
    assert_invalid_token(http.get("/api/account", headers=bearer(other)))


def test_a_disabled_persons_token_is_401(http, ctx, token, person):
    with ctx.db.begin() as db:
        disable_user(db, person.id)
    assert_invalid_token(http.get("/api/account", headers=bearer(token)))


def test_a_client_credentials_token_is_403(http, make_client, documented):
    service = make_client(redirect_uris=[], grant_types=["client_credentials"], scope="api.read")
    issued = http.post("/token", data={"grant_type": "client_credentials"}, auth=service.auth)
    assert issued.status_code == 200, issued.text
    response = http.get("/api/account/sessions", headers=bearer(issued.json()["access_token"]))
    assert_problem(response, 403, "no-person")
    documented.check(response, "/api/account/sessions", "get")


def test_a_token_without_the_openid_scope_is_403(http, ctx, tokens, person):
    grant_jti = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    response = http.get("/api/account", headers=bearer(own_token(ctx, sub=person.id, jti=grant_jti, scope="email")))
    assert_problem(response, 403, "insufficient-scope")
    assert challenge(response) == {"realm": "idp", "error": "insufficient_scope", "scope": "openid"}


def test_a_token_naming_someone_else_than_its_grant_is_403(http, ctx, tokens, make_user):
    grant_jti = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    response = http.get("/api/account", headers=bearer(own_token(ctx, sub=make_user().id, jti=grant_jti)))
    assert_problem(response, 403, "no-person")


def test_the_token_is_checked_before_the_body(http):
    for content_type in ("text/plain", "application/json"):
        response = http.patch(
            "/api/account", headers={"Authorization": "Bearer nope", "Content-Type": content_type}, content=b"{"
        )
        assert_invalid_token(response)


def test_a_token_in_the_query_string_is_not_accepted(http, token):
    response = http.get("/api/account", params={"access_token": token})
    assert_problem(response, 401, "invalid-token")
    assert "error" not in challenge(response)


# --- sessions ------------------------------------------------------------------------------------


def test_sessions_list_marks_the_tokens_session(browsers, http, tokens, person, documented):
    sign_in(browsers(FIREFOX), person.email)
    response = http.get("/api/account/sessions", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text
    documented.check(response, "/api/account/sessions", "get")
    sessions = response.json()
    assert len(sessions) == 2
    assert [s["current"] for s in sessions] == [True, False]
    assert sessions[0]["id"] == session_of(tokens)
    assert "Chrome" in sessions[0]["device"] and "Firefox" in sessions[1]["device"]
    assert all(s["started_at"] <= s["last_seen_at"] for s in sessions)


def test_ending_another_session_revokes_its_tokens(browsers, http, ctx, tokens, client, person, documented):
    there = tokens_for(browsers(FIREFOX), client, person)
    response = http.delete(f"/api/account/sessions/{session_of(there)}", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204, response.text
    documented.check(response, "/api/account/sessions/{session_id}", "delete")
    assert_invalid_token(http.get("/api/account", headers=bearer(there["access_token"])))
    assert http.get("/api/account", headers=bearer(tokens["access_token"])).status_code == 200
    ended = events(ctx, person.id, "session_ended")[-1]
    assert ended.detail == {"session_id": session_of(there), "current": False}
    assert ended.client_id == client.client_id


def test_ending_the_current_session_revokes_the_token_used(http, tokens):
    response = http.delete(f"/api/account/sessions/{session_of(tokens)}", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert_invalid_token(http.get("/api/account", headers=bearer(tokens["access_token"])))


def test_another_persons_token_cannot_end_my_session(browsers, http, client, tokens, make_user, documented):
    stranger = tokens_for(browsers(FIREFOX), client, make_user())
    mine = session_of(tokens)
    response = http.delete(f"/api/account/sessions/{mine}", headers=bearer(stranger["access_token"]))
    assert_problem(response, 404, "session-not-found")
    documented.check(response, "/api/account/sessions/{session_id}", "delete")
    unknown = http.delete("/api/account/sessions/no-such-session", headers=bearer(tokens["access_token"]))
    assert unknown.json()["detail"] == response.json()["detail"]
    assert_problem(unknown, 404, "session-not-found")
    assert http.get("/api/account", headers=bearer(tokens["access_token"])).status_code == 200
    ended = http.post("/api/account/sessions/end-others", headers=bearer(stranger["access_token"]))
    assert ended.json() == {"ended": 0, "phone_removed": None}
    assert http.get("/api/account", headers=bearer(tokens["access_token"])).status_code == 200


def test_end_others_keeps_the_tokens_session(browsers, http, ctx, tokens, client, person, documented):
    there = tokens_for(browsers(FIREFOX), client, person)
    elsewhere = browsers(FIREFOX)
    sign_in(elsewhere, person.email)
    response = http.post("/api/account/sessions/end-others", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text
    assert response.json() == {"ended": 2, "phone_removed": None}
    documented.check(response, "/api/account/sessions/end-others", "post")
    assert_invalid_token(http.get("/api/account", headers=bearer(there["access_token"])))
    assert elsewhere.get("/account").status_code == 303
    listed = http.get("/api/account/sessions", headers=bearer(tokens["access_token"])).json()
    assert [s["id"] for s in listed] == [session_of(tokens)]
    assert len(events(ctx, person.id, "session_ended")) == 2


# --- password ------------------------------------------------------------------------------------


def change_password(http: TestClient, token: str, current: str, new: str) -> httpx.Response:
    return http.post(
        "/api/account/password", headers=bearer(token), json={"current_password": current, "password": new}
    )


def test_changing_the_password_ends_the_other_sessions(browsers, http, ctx, tokens, client, person, documented):
    there = tokens_for(browsers(FIREFOX), client, person)
    response = change_password(http, tokens["access_token"], PASSWORD, NEW_PASSWORD)
    assert response.status_code == 204, response.text
    documented.check(response, "/api/account/password", "post")
    assert_invalid_token(http.get("/api/account", headers=bearer(there["access_token"])))
    assert http.get("/api/account", headers=bearer(tokens["access_token"])).status_code == 200
    sign_in(browsers(), person.email, NEW_PASSWORD)
    changed = events(ctx, person.id, "password_changed")[-1]
    assert (changed.outcome, changed.user_agent) == ("success", http.headers["user-agent"])


def test_a_wrong_current_password_is_403(http, ctx, browsers, token, person, documented):
    response = change_password(http, token, "not the password", NEW_PASSWORD)
    assert_problem(response, 403, "wrong-password")
    documented.check(response, "/api/account/password", "post")
    refused = events(ctx, person.id, "password_changed")[-1]
    assert (refused.outcome, refused.user_agent) == ("failure", http.headers["user-agent"])
    sign_in(browsers(), person.email, PASSWORD)


def test_a_locked_account_takes_no_current_password(http, ctx, token, person, documented):
    for _ in range(ctx.settings.lockout_attempts):
        assert_problem(change_password(http, token, "not the password", NEW_PASSWORD), 403, "wrong-password")
    response = change_password(http, token, PASSWORD, NEW_PASSWORD)
    assert "locked" in assert_problem(response, 403, "account-locked")["detail"]
    documented.check(response, "/api/account/password", "post")
    assert events(ctx, person.id, "password_changed")[-1].detail == {"reason": "account_locked"}


@pytest.mark.parametrize(("new", "says"), [("short", "at least"), ("password123", "too common")])
def test_the_password_policy_is_422_with_its_message(http, browsers, token, person, new, says, documented):
    response = change_password(http, token, PASSWORD, new)
    problem = assert_problem(response, 422, "password-rejected")
    assert says in problem["detail"]
    documented.check(response, "/api/account/password", "post")
    sign_in(browsers(), person.email, PASSWORD)


def test_a_password_change_needs_both_members(http, token):
    response = http.post("/api/account/password", headers=bearer(token), json={"password": NEW_PASSWORD})
    problem = assert_problem(response, 422, "invalid-body")
    assert problem["errors"] == [{"pointer": "/current_password", "detail": "is required"}]


# --- phone ---------------------------------------------------------------------------------------


def test_a_phone_number_is_verified_with_the_code_sent_to_it(http, ctx, token, person, sms_log, documented):
    phone = random_phone()
    response = http.post("/api/account/phone", headers=bearer(token), json=adding(phone))
    assert response.status_code == 202, response.text
    assert response.json() == {"phone": phone, "expires_in": ctx.settings.otp_ttl}
    documented.check(response, "/api/account/phone", "post")
    code = sms_code(ctx, sms_log, phone)
    wrong = http.post(
        "/api/account/phone/verify", headers=bearer(token), json={"code": "000000" if code != "000000" else "111111"}
    )
    assert_problem(wrong, 422, "wrong-code")
    documented.check(wrong, "/api/account/phone/verify", "post")
    assert http.get("/api/account", headers=bearer(token)).json()["phone"] is None
    verified = http.post("/api/account/phone/verify", headers=bearer(token), json={"code": code})
    assert verified.status_code == 200, verified.text
    assert verified.json()["phone"] == phone and verified.json()["phone_verified"] is True
    documented.check(verified, "/api/account/phone/verify", "post")
    assert [e.outcome for e in events(ctx, person.id, "phone_verified")] == ["failure", "success"]


def test_a_number_in_arabic_indic_digits_and_its_code_in_persian_digits(http, ctx, token, sms_log):
    phone = random_phone()
    response = http.post("/api/account/phone", headers=bearer(token), json=adding(in_arabic_indic(phone)))
    assert response.status_code == 202, response.text
    assert response.json()["phone"] == phone
    code = sms_code(ctx, sms_log, phone)
    verified = http.post("/api/account/phone/verify", headers=bearer(token), json={"code": in_persian(code)})
    assert verified.status_code == 200, verified.text
    assert verified.json()["phone"] == phone and verified.json()["phone_verified"] is True


@pytest.mark.parametrize("typed", ["12", "not a number", "+1 555 0100 0100 0100"])
def test_an_invalid_phone_number_is_422(http, token, typed, documented):
    response = http.post("/api/account/phone", headers=bearer(token), json=adding(typed))
    assert_problem(response, 422, "invalid-phone")
    documented.check(response, "/api/account/phone", "post")


def test_verifying_without_a_pending_number_is_409(http, token, documented):
    response = http.post("/api/account/phone/verify", headers=bearer(token), json={"code": "123456"})
    assert_problem(response, 409, "no-pending-phone")
    documented.check(response, "/api/account/phone/verify", "post")


def test_too_many_codes_is_429_with_retry_after(http, token, documented):
    phone = random_phone()
    for _ in range(3):
        assert http.post("/api/account/phone", headers=bearer(token), json=adding(phone)).status_code == 202
    response = http.post("/api/account/phone", headers=bearer(token), json=adding(phone))
    problem = assert_problem(response, 429, "too-many-codes")
    assert int(response.headers["retry-after"]) == problem["retry_after"] > 0
    documented.check(response, "/api/account/phone", "post")


def test_a_number_another_account_verified_is_409(http, ctx, token, make_user, sms_log):
    phone = random_phone()
    make_user(phone=phone)
    assert http.post("/api/account/phone", headers=bearer(token), json=adding(phone)).status_code == 202
    code = sms_code(ctx, sms_log, phone)
    response = http.post("/api/account/phone/verify", headers=bearer(token), json={"code": code})
    assert_problem(response, 409, "phone-unavailable")


def test_removing_the_phone_number(http, ctx, browsers, client, make_user, documented, mail_log):
    phone = random_phone()
    user = make_user(phone=phone)
    access = tokens_for(browsers(), client, user)["access_token"]
    response = http.delete("/api/account/phone", headers=bearer(access))
    assert response.status_code == 200, response.text
    assert (response.json()["phone"], response.json()["phone_verified"]) == (None, False)
    documented.check(response, "/api/account/phone", "delete")
    assert events(ctx, user.id, "phone_removed")[-1].detail == {"phone": f"{phone[:6]}***{phone[-4:]}"}
    notice = emailed(ctx, mail_log, user.email, PHONE_REMOVED)
    assert f"{phone[:6]}***{phone[-4:]}" in notice and phone not in notice
    again = http.delete("/api/account/phone", headers=bearer(access))
    assert_problem(again, 409, "no-phone")
    documented.check(again, "/api/account/phone", "delete")


def test_the_number_of_the_sms_second_factor_is_needed(http, ctx, browsers, client, make_user, documented):
    phone = random_phone()
    user = make_user(phone=phone)
    access = tokens_for(browsers(), client, user)["access_token"]
    with ctx.db.begin() as db:
        db.get(User, user.id).mfa_method = "sms"
    response = http.delete("/api/account/phone", headers=bearer(access))
    assert "Two-step sign-in" in assert_problem(response, 409, "phone-needed")["detail"]
    documented.check(response, "/api/account/phone", "delete")
    assert http.get("/api/account", headers=bearer(access)).json()["phone"] == phone


def test_the_number_of_the_sms_second_factor_cannot_be_replaced(http, ctx, browsers, client, make_user, documented):
    phone = random_phone()
    user = make_user(phone=phone)
    access = tokens_for(browsers(), client, user)["access_token"]
    with ctx.db.begin() as db:
        db.get(User, user.id).mfa_method = "sms"
    response = http.post("/api/account/phone", headers=bearer(access), json=adding(random_phone()))
    assert "Two-step sign-in" in assert_problem(response, 409, "phone-needed")["detail"]
    documented.check(response, "/api/account/phone", "post")
    assert http.get("/api/account", headers=bearer(access)).json()["phone"] == phone


def test_the_phone_path_names_both_its_methods(http, token):
    response = http.put("/api/account/phone", headers=bearer(token), json={})
    assert_problem(response, 405, None)
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"POST", "DELETE"}


# --- routing errors and the document -------------------------------------------------------------


def test_an_unknown_path_under_api_is_a_problem(http, token):
    response = http.get("/api/account/nothing-here", headers=bearer(token))
    assert_problem(response, 404, None)
    assert response.json()["title"] == "Not Found"


def test_a_method_not_allowed_is_a_problem_with_allow(http, token):
    response = http.put("/api/account", headers=bearer(token), json={})
    assert_problem(response, 405, None)
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PATCH", "DELETE"}


def test_the_openapi_document_is_valid_openapi_3_1(http):
    response = http.get("/api/account/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": TEST_ISSUER}]
    validate_spec(document)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == schemes["bearer"] | {"type": "http", "scheme": "bearer"}
    assert document["security"] == [{"bearer": ["openid"]}]
    assert set(document["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status", "detail"}


def _api_routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """``(path, method)`` of every route the app serves under ``/api/account``."""
    found = set()
    for mount in app.routes:
        if not isinstance(mount, Mount):
            continue
        for route in mount.routes:
            path = mount.path + route.path
            if isinstance(route, Route) and path.startswith("/api/account"):
                found |= {(path, method.lower()) for method in route.methods or () if method != "HEAD"}
    return found


def test_every_route_is_documented_and_every_documented_operation_is_routed(http, app):
    document = http.get("/api/account/openapi.json").json()
    documented = {
        (path, method) for path, item in document["paths"].items() for method in item if method != "parameters"
    }
    routed = _api_routes(app)
    assert len(routed) == 15
    assert routed == documented


def test_each_token_sees_its_own_person(http, browsers, client, make_user, token, person):
    other = make_user(name="Someone Else")
    theirs = tokens_for(browsers(FIREFOX), client, other)["access_token"]
    assert http.get("/api/account", headers=bearer(theirs)).json()["sub"] == other.id
    assert http.get("/api/account", headers=bearer(token)).json()["sub"] == person.id


def test_phone_verification_shares_the_pages_rate_limit(base_environ, make_user, make_client, documented):
    """The API is no way around the hosted pages' per-address budget for codes."""
    settings = make_settings(base_environ, IDP_RATE_LIMITING="on", IDP_RATE_LIMIT_VERIFICATION="2/hour")
    limited = create_app(settings)
    person, client = make_user(), make_client(first_party=True)
    # An address of its own: with Redis the counts outlive this app, and other tests spend theirs.
    with TestClient(limited, base_url=TEST_ISSUER, follow_redirects=False, client=(new_address(), 50000)) as http:
        access = tokens_for(http, client, person)["access_token"]
        first = http.post("/api/account/phone", json=adding(random_phone()), headers=bearer(access))
        assert first.status_code == 202, first.text
        second = http.post("/api/account/phone/verify", json={"code": "000000"}, headers=bearer(access))
        assert second.status_code == 422
        third = http.post("/api/account/phone", json=adding(random_phone()), headers=bearer(access))
        body = assert_problem(third, 429, "rate-limited")
        assert int(third.headers["retry-after"]) > 0 and body["retry_after"] > 0
        documented.check(third, "/api/account/phone", "post")
        fourth = http.post("/api/account/phone/verify", json={"code": "000000"}, headers=bearer(access))
        assert_problem(fourth, 429, "rate-limited")
        documented.check(fourth, "/api/account/phone/verify", "post")
    with limited.state.ctx.db() as db:
        refused = db.scalars(
            select(AuditEvent).where(AuditEvent.event == "rate_limited", AuditEvent.user_id == person.id)
        ).all()
        assert [e.detail for e in refused] == [{"limit": "verification"}] * 2
    limited.state.ctx.close()


def test_a_third_party_apps_token_may_not_manage_the_account(browsers, make_client, person, documented):
    """An app that signs people in must not thereby end their sessions or change their password."""
    third_party = make_client()
    browser = browsers()
    access = tokens_for(browser, third_party, person)["access_token"]
    for method, path, body in (
        ("get", "/api/account", None),
        ("post", "/api/account/sessions/end-others", None),
        ("post", "/api/account/password", {"current_password": PASSWORD, "password": "another long passphrase"}),
    ):
        response = browser.request(method.upper(), path, json=body, headers=bearer(access))
        assert_problem(response, 403, "not-first-party")
        documented.check(response, path, method)
