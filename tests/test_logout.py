"""RP-Initiated Logout 1.0 at the end-session endpoint, driven over HTTP in-process."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.testclient import TestClient

from idp.storage import BrowserSession

from . import flows
from .conftest import TEST_ISSUER
from .flows import RegisteredClient, authorize_params, hidden_fields, pkce_pair, query_of, tokens_for

BYE = "https://rp.example/bye"
SESSION_COOKIE = "idp_session"


@dataclass
class SignedIn:
    client: RegisteredClient
    user: flows.TestUser
    tokens: dict[str, Any]

    @property
    def id_token(self) -> str:
        return self.tokens["id_token"]

    @property
    def sid(self) -> str:
        return _claims(self.id_token)["sid"]


def _claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: only to read what the provider put in it."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def signed_in(http, make_client, make_user) -> SignedIn:  # type: ignore[no-untyped-def]
    client = make_client(post_logout_redirect_uris=[BYE, "https://rp.example/bye?from=idp"])
    user = make_user()
    return SignedIn(client, user, tokens_for(http, client, user))


def session_active(http: TestClient, client: RegisteredClient) -> bool:
    """Whether this browser is still signed in: a new authorization skips the sign-in page."""
    _, challenge = pkce_pair()
    response = http.get("/authorize", params=authorize_params(client, challenge))
    assert response.status_code == 303, response.text
    path = urlsplit(response.headers["location"]).path
    assert path in ("/login", "/consent") or response.headers["location"].startswith(client.redirect_uri)
    return path != "/login"


def refresh_works(http: TestClient, signed: SignedIn) -> bool:
    response = http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": signed.tokens["refresh_token"]},
        auth=signed.client.auth,
    )
    if response.status_code == 200:
        signed.tokens["refresh_token"] = response.json()["refresh_token"]
        return True
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    return False


def session_row(ctx, sid: str) -> BrowserSession:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        row = db.get(BrowserSession, sid)
        assert row is not None
        db.expunge(row)
        return row


def assert_error_page(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert 'role="alert"' in response.text
    assert "set-cookie" not in response.headers or SESSION_COOKIE not in response.headers["set-cookie"]


def assert_confirmation_page(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    assert 'name="decision" value="logout"' in response.text
    fields = hidden_fields(response.text)
    assert fields.get("csrf_token")
    return fields


# --- a valid hint for the current session ---------------------------------------------------------


def test_valid_hint_redirects_with_state_and_ends_the_session(http, ctx, signed_in):
    assert http.cookies.get(SESSION_COOKIE)
    response = http.get(
        "/logout",
        params={"id_token_hint": signed_in.id_token, "post_logout_redirect_uri": BYE, "state": "s t&x"},
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.split("?")[0] == BYE
    assert query_of(location) == {"state": "s t&x"}
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
    assert http.cookies.get(SESSION_COOKIE) is None
    assert session_row(ctx, signed_in.sid).ended_at is not None
    assert not session_active(http, signed_in.client)
    assert not refresh_works(http, signed_in)


def test_logout_ends_the_session_even_if_the_browser_kept_the_cookie(http, signed_in):
    cookie = http.cookies.get(SESSION_COOKIE)
    response = http.get("/logout", params={"id_token_hint": signed_in.id_token, "post_logout_redirect_uri": BYE})
    assert response.status_code == 303
    assert response.headers["location"] == BYE
    http.cookies.set(SESSION_COOKIE, cookie)
    assert not session_active(http, signed_in.client)


def test_post_is_supported(http, ctx, signed_in):
    response = http.post(
        "/logout",
        data={"id_token_hint": signed_in.id_token, "post_logout_redirect_uri": BYE, "state": "abc"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == BYE + "?state=abc"
    assert session_row(ctx, signed_in.sid).ended_at is not None
    assert not refresh_works(http, signed_in)


def test_registered_uri_with_a_query_keeps_it(http, signed_in):
    response = http.get(
        "/logout",
        params={
            "id_token_hint": signed_in.id_token,
            "post_logout_redirect_uri": "https://rp.example/bye?from=idp",
            "state": "xyz",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "https://rp.example/bye?from=idp&state=xyz"


def test_valid_hint_without_redirect_uri_shows_signed_out_page(http, ctx, signed_in):
    response = http.get("/logout", params={"id_token_hint": signed_in.id_token})
    assert response.status_code == 200
    assert "signed out" in response.text
    assert session_row(ctx, signed_in.sid).ended_at is not None
    assert not session_active(http, signed_in.client)


def test_without_state_the_redirect_carries_no_state(http, signed_in):
    response = http.get("/logout", params={"id_token_hint": signed_in.id_token, "post_logout_redirect_uri": BYE})
    assert response.status_code == 303
    assert response.headers["location"] == BYE


# --- redirect targets that must not be used ------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://rp.example/byE",
        "https://rp.example/bye/",
        "https://rp.example/by",
        "https://evil.example/bye",
        "https://rp.example/cb",  # a redirect_uri, but not a post-logout one
    ],
)
def test_unregistered_post_logout_redirect_uri_is_an_error(http, ctx, signed_in, uri):
    response = http.get(
        "/logout", params={"id_token_hint": signed_in.id_token, "post_logout_redirect_uri": uri, "state": "s"}
    )
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None
    assert session_active(http, signed_in.client)
    assert refresh_works(http, signed_in)


def test_redirect_uri_without_a_known_client_is_an_error(http, ctx, signed_in):
    response = http.get("/logout", params={"post_logout_redirect_uri": BYE, "state": "s"})
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None
    assert session_active(http, signed_in.client)


def test_redirect_uri_with_an_invalid_hint_and_no_client_id_is_an_error(http, ctx, signed_in):
    forged = signed_in.id_token[:-4] + ("AAAA" if not signed_in.id_token.endswith("AAAA") else "BBBB")
    response = http.get("/logout", params={"id_token_hint": forged, "post_logout_redirect_uri": BYE})
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None


def test_unknown_client_id_is_an_error(http, ctx, signed_in):
    response = http.get("/logout", params={"client_id": "no-such-client", "post_logout_redirect_uri": BYE})
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None


def test_client_id_contradicting_the_hint_is_an_error(http, ctx, make_client, signed_in):
    other = make_client(post_logout_redirect_uris=[BYE])
    response = http.get(
        "/logout",
        params={"id_token_hint": signed_in.id_token, "client_id": other.client_id, "post_logout_redirect_uri": BYE},
    )
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None
    assert session_active(http, signed_in.client)


def test_client_id_agreeing_with_the_hint_is_fine(http, ctx, signed_in):
    response = http.get(
        "/logout",
        params={
            "id_token_hint": signed_in.id_token,
            "client_id": signed_in.client.client_id,
            "post_logout_redirect_uri": BYE,
            "state": "q",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == BYE + "?state=q"
    assert session_row(ctx, signed_in.sid).ended_at is not None


# --- confirmation when the hint does not prove who asks ----------------------------------------


def test_missing_hint_asks_for_confirmation(http, ctx, signed_in):
    response = http.get("/logout")
    assert_confirmation_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None
    assert session_active(http, signed_in.client)


def test_invalid_hint_asks_for_confirmation(http, ctx, signed_in):
    response = http.get("/logout", params={"id_token_hint": "not.a.token"})
    assert_confirmation_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None


def test_access_token_as_hint_asks_for_confirmation(http, ctx, signed_in):
    response = http.get("/logout", params={"id_token_hint": signed_in.tokens["access_token"]})
    assert_confirmation_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None


@pytest.mark.parametrize("same_person", [False, True])
def test_hint_of_another_session_asks_for_confirmation(app, http, ctx, make_user, signed_in, same_person):
    """A hint from another browser's session does not prove this browser wants to sign out."""
    with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as other_browser:
        other = tokens_for(other_browser, signed_in.client, signed_in.user if same_person else make_user())
    other_sid = _claims(other["id_token"])["sid"]
    assert other_sid != signed_in.sid
    response = http.get("/logout", params={"id_token_hint": other["id_token"], "post_logout_redirect_uri": BYE})
    assert_confirmation_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None
    assert session_row(ctx, other_sid).ended_at is None


def test_confirming_with_the_csrf_token_ends_the_session(http, ctx, signed_in):
    fields = assert_confirmation_page(http.get("/logout"))
    response = http.post("/logout", data={**fields, "decision": "logout"})
    assert response.status_code == 200
    assert "signed out" in response.text
    assert http.cookies.get(SESSION_COOKIE) is None
    assert session_row(ctx, signed_in.sid).ended_at is not None
    assert not session_active(http, signed_in.client)
    assert not refresh_works(http, signed_in)


@pytest.mark.parametrize("csrf_token", [None, "", "wrong-token", "A" * 64])
def test_confirming_without_a_valid_csrf_token_keeps_the_session(http, ctx, signed_in, csrf_token):
    fields = assert_confirmation_page(http.get("/logout"))
    data = {k: v for k, v in fields.items() if k != "csrf_token"} | {"decision": "logout"}
    if csrf_token is not None:
        data["csrf_token"] = csrf_token
    response = http.post("/logout", data=data)
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None
    assert session_active(http, signed_in.client)


def test_confirming_by_get_is_refused(http, ctx, signed_in):
    """A link (or an image) cannot sign a person out: the confirmation is a POST with a CSRF token."""
    fields = assert_confirmation_page(http.get("/logout"))
    response = http.get("/logout", params={**fields, "decision": "logout"})
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None


def test_other_decision_keeps_the_session(http, ctx, signed_in):
    fields = assert_confirmation_page(http.get("/logout"))
    response = http.post("/logout", data={**fields, "decision": "stay"})
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None


def test_client_id_without_hint_confirms_then_redirects(http, ctx, signed_in):
    response = http.get(
        "/logout",
        params={"client_id": signed_in.client.client_id, "post_logout_redirect_uri": BYE, "state": "st8"},
    )
    fields = assert_confirmation_page(response)
    assert fields["client_id"] == signed_in.client.client_id
    assert fields["post_logout_redirect_uri"] == BYE
    assert fields["state"] == "st8"
    assert session_row(ctx, signed_in.sid).ended_at is None
    confirmed = http.post("/logout", data={**fields, "decision": "logout"})
    assert confirmed.status_code == 303
    assert confirmed.headers["location"] == BYE + "?state=st8"
    assert session_row(ctx, signed_in.sid).ended_at is not None
    assert not refresh_works(http, signed_in)


def test_confirmation_cannot_be_steered_to_an_unregistered_uri(http, ctx, signed_in):
    fields = assert_confirmation_page(
        http.get("/logout", params={"client_id": signed_in.client.client_id, "post_logout_redirect_uri": BYE})
    )
    response = http.post(
        "/logout", data={**fields, "post_logout_redirect_uri": "https://evil.example/", "decision": "logout"}
    )
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None


# --- hints signed by other keys, expired hints, no session ----------------------------------------


def test_hint_signed_by_a_rotated_but_published_key_is_accepted(http, ctx, signed_in):
    old_kid = jwt.decode(signed_in.id_token, ctx.keyring.snapshot().keyset).header["kid"]
    ctx.keystore.rotate()
    deadline = time.monotonic() + 10  # the key ring looks at the directory at most once a second
    while ctx.keyring.snapshot().active.kid == old_kid and time.monotonic() < deadline:
        time.sleep(0.05)
    snapshot = ctx.keyring.snapshot()
    assert snapshot.active.kid != old_kid
    assert old_kid in {k["kid"] for k in http.get("/jwks.json").json()["keys"]}
    response = http.get(
        "/logout", params={"id_token_hint": signed_in.id_token, "post_logout_redirect_uri": BYE, "state": "r"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == BYE + "?state=r"
    assert session_row(ctx, signed_in.sid).ended_at is not None


def _expired_hint(ctx, signed: SignedIn) -> str:  # type: ignore[no-untyped-def]
    active = ctx.keyring.snapshot().active
    issued = int(time.time()) - 7200
    claims = {
        **_claims(signed.id_token),
        "iat": issued,
        "exp": issued + 300,
    }
    return jwt.encode({"alg": "RS256", "kid": active.kid, "typ": "JWT"}, claims, active.key)


def test_expired_hint_is_still_accepted(http, ctx, signed_in):
    hint = _expired_hint(ctx, signed_in)
    assert _claims(hint)["exp"] < time.time()
    response = http.get("/logout", params={"id_token_hint": hint, "post_logout_redirect_uri": BYE, "state": "e"})
    assert response.status_code == 303
    assert response.headers["location"] == BYE + "?state=e"
    assert session_row(ctx, signed_in.sid).ended_at is not None


def test_hint_signed_by_an_unknown_key_is_not_a_hint(http, ctx, signed_in):
    stranger = RSAKey.generate_key(2048, private=True)
    header = {"alg": "RS256", "kid": stranger.thumbprint(), "typ": "JWT"}
    hint = jwt.encode(header, _claims(signed_in.id_token), stranger)
    response = http.get("/logout", params={"id_token_hint": hint, "post_logout_redirect_uri": BYE})
    assert_error_page(response)
    assert session_row(ctx, signed_in.sid).ended_at is None
    assert_confirmation_page(http.get("/logout", params={"id_token_hint": hint}))


def test_hint_from_another_issuer_is_not_a_hint(http, ctx, signed_in):
    active = ctx.keyring.snapshot().active
    claims = {**_claims(signed_in.id_token), "iss": "https://other.example"}
    hint = jwt.encode({"alg": "RS256", "kid": active.kid, "typ": "JWT"}, claims, active.key)
    assert_confirmation_page(http.get("/logout", params={"id_token_hint": hint}))
    assert session_row(ctx, signed_in.sid).ended_at is None


def test_without_a_session_a_valid_hint_redirects(app, ctx, signed_in):
    with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as fresh_browser:
        response = fresh_browser.get(
            "/logout", params={"id_token_hint": signed_in.id_token, "post_logout_redirect_uri": BYE, "state": "n"}
        )
    assert response.status_code == 303
    assert response.headers["location"] == BYE + "?state=n"
    # Another browser's logout does not end the session the hint came from.
    assert session_row(ctx, signed_in.sid).ended_at is None


def test_without_a_session_and_without_hint_shows_signed_out(app):
    with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as fresh_browser:
        response = fresh_browser.get("/logout")
    assert response.status_code == 200
    assert "signed out" in response.text
    assert 'value="logout"' not in response.text


def test_logout_pages_are_not_cached(http, signed_in):
    response = http.get("/logout")
    assert response.headers["cache-control"] == "no-store"
