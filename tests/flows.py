"""Steps of the browser flow, for tests that drive the provider over HTTP without a browser."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    client_secret: str | None
    redirect_uri: str

    @property
    def auth(self) -> tuple[str, str]:
        assert self.client_secret is not None
        return (self.client_id, self.client_secret)


@dataclass(frozen=True)
class TestUser:
    id: str
    email: str
    password: str | None


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(client: RegisteredClient, challenge: str | None = None, **overrides: Any) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uri,
        "scope": "openid profile email offline_access",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
    }
    if challenge is not None:
        params["code_challenge"] = challenge
        params["code_challenge_method"] = "S256"
    params.update({k: v for k, v in overrides.items() if v is not None})
    return {k: v for k, v in params.items() if v != ""}


def hidden_fields(html: str) -> dict[str, str]:
    return {name: value.replace("&amp;", "&") for name, value in _HIDDEN.findall(html)}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}


def path_of(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def submit_login(http: httpx.Client, login_location: str, email: str, password: str) -> httpx.Response:
    page = http.get(path_of(login_location))
    assert page.status_code == 200, page.text
    fields = hidden_fields(page.text)
    return http.post("/login", data={**fields, "username": email, "password": password})


def submit_consent(http: httpx.Client, consent_location: str, decision: str = "allow") -> httpx.Response:
    page = http.get(path_of(consent_location))
    assert page.status_code == 200, page.text
    return http.post("/consent", data={**hidden_fields(page.text), "decision": decision})


def sign_in(
    http: httpx.Client, client: RegisteredClient, user: TestUser, challenge: str | None, **overrides: Any
) -> dict[str, str]:
    """Authorize, sign in if asked, consent if asked; the query the client receives."""
    response = http.get("/authorize", params=authorize_params(client, challenge, **overrides))
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    if urlsplit(location).path == "/login":
        assert user.password is not None
        response = submit_login(http, location, user.email, user.password)
        assert response.status_code == 303, response.text
        location = response.headers["location"]
    if urlsplit(location).path == "/consent":
        response = submit_consent(http, location)
        assert response.status_code == 303, response.text
        location = response.headers["location"]
    assert location.startswith(client.redirect_uri), location
    return query_of(location)


def exchange(
    http: httpx.Client, client: RegisteredClient, code: str, verifier: str | None, **extra: str
) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": client.redirect_uri, **extra}
    if verifier is not None:
        data["code_verifier"] = verifier
    if client.client_secret is None:
        return http.post("/token", data={**data, "client_id": client.client_id})
    return http.post("/token", data=data, auth=client.auth)


def tokens_for(http: httpx.Client, client: RegisteredClient, user: TestUser, **overrides: Any) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    callback = sign_in(http, client, user, challenge, **overrides)
    response = exchange(http, client, callback["code"], verifier)
    assert response.status_code == 200, response.text
    return response.json()
