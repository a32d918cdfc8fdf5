"""Steps of the browser flow, for tests that drive the provider over HTTP without a browser, and
what such a test reads back from an in-process app (its context, the codes it emailed)."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from idp.accounts.digits import ARABIC_INDIC, PERSIAN
from idp.context import Context
from idp.messaging.worker import deliver_due
from idp.storage import OutboxMessage

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
_ALERT = re.compile(r'<[^>]*role="alert"[^>]*>(.*?)</', re.DOTALL)
WRONG_PASSWORD = "not the password at all"
EMAIL_CODE = re.compile(r"Your one-time code is (\d{6,8})\.")
_IN_PERSIAN = str.maketrans("0123456789", PERSIAN)
_IN_ARABIC_INDIC = str.maketrans("0123456789", ARABIC_INDIC)


def in_persian(text: str) -> str:
    """``text`` with its digits as a Persian keyboard types them."""
    return text.translate(_IN_PERSIAN)


def in_arabic_indic(text: str) -> str:
    """``text`` with its digits as an Arabic keyboard types them."""
    return text.translate(_IN_ARABIC_INDIC)


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


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll ``check`` until it holds or ``seconds`` pass: for what a process does in the
    background (a key rotation reaching it, a batch of audit events written)."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


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


def post_login(http: httpx.Client, username: str, password: str, **extra: str) -> httpx.Response:
    """Fill in the sign-in page as a browser would."""
    page = http.get("/login")
    assert page.status_code == 200, page.text
    return http.post("/login", data={**hidden_fields(page.text), "username": username, "password": password, **extra})


def fail_times(http: httpx.Client, email: str, times: int) -> None:
    for _ in range(times):
        assert_generic_failure(post_login(http, email, WRONG_PASSWORD))


def ask_for_code(http: httpx.Client, identifier: str, request_id: str | None = None) -> httpx.Response:
    """Ask the sign-in-by-code page for a code, for the sign-in request ``request_id`` if given."""
    page = http.get("/login/code", params={"request": request_id} if request_id else None)
    assert page.status_code == 200, page.text
    return http.post("/login/code", data={**hidden_fields(page.text), "identifier": identifier})


def enter_code(http: httpx.Client, code: str) -> httpx.Response:
    page = http.get("/login/verify")
    assert page.status_code == 200, page.text
    return http.post("/login/verify", data={**hidden_fields(page.text), "code": code})


def follow_email_change_link(http: httpx.Client, path: str) -> httpx.Response:
    """Open the link sent to a new address and press its button; the page of a link refused."""
    page = http.get(path)
    if page.status_code != 200:
        return page
    return http.post("/account/email/confirm", data=hidden_fields(page.text))


def ctx_of(client: TestClient) -> Context:
    """The context of the in-process app ``client`` drives."""
    return client.app.state.ctx  # type: ignore[attr-defined]


def emailed_code(client: TestClient, caplog: pytest.LogCaptureFixture, email: str) -> str:
    """The code in the last email to ``email``, delivered now rather than by the worker's next round,
    as the console backend logged it (``caplog`` at INFO for ``idp.messages``), once nothing queued
    for ``email`` is left unsent."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        deliver_due(ctx_of(client))
        if unsent_to(ctx_of(client), email):
            time.sleep(0.05)
            continue
        logged = [r.getMessage() for r in caplog.records if r.name == "idp.messages"]
        sent = [message for message in logged if message.startswith(f"email to {email}\n")]
        if sent:
            found = EMAIL_CODE.search(sent[-1])
            assert found, sent[-1]
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no email to {email}")


def unsent_to(ctx: Context, recipient: str) -> int:
    """How many messages queued for ``recipient`` are neither sent nor given up: the app's own
    delivery worker may hold one claimed while a test reads what was sent."""
    with ctx.db() as db:
        return db.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                OutboxMessage.recipient == recipient, OutboxMessage.sent_at.is_(None), OutboxMessage.failed_at.is_(None)
            )
        )


def messages_to(client: TestClient, recipient: str) -> int:
    """How many messages the app queued for ``recipient``, sent or not."""
    with ctx_of(client).db() as db:
        return db.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.recipient == recipient))


def alert_text(response: httpx.Response) -> str:
    found = _ALERT.search(response.text)
    assert found, response.text
    return html.unescape(found.group(1)).strip()


def session_cookies(response: httpx.Response) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if "idp_session=" in c.split(";")[0]]


def assert_signed_in(response: httpx.Response) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/account"
    assert session_cookies(response)


def assert_generic_failure(response: httpx.Response) -> str:
    """A failed sign-in: the form again with its alert, and no session."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert not session_cookies(response)
    return alert_text(response)


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


def client_credentials_token(http: httpx.Client, client: RegisteredClient) -> str:
    response = http.post("/token", data={"grant_type": "client_credentials"}, auth=client.auth)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def introspect(http: httpx.Client, client: RegisteredClient, token: str) -> dict[str, Any]:
    response = http.post("/introspect", data={"token": token}, auth=client.auth)
    assert response.status_code == 200, response.text
    return dict(response.json())
