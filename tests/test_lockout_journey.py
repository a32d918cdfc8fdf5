"""Lockout and its end in Chromium, from a relying app's authorization request to its callback.

A live ``idp serve`` on a database of the test's own mails through real SMTP to an aiosmtpd sink,
so the lock email is the one its own delivery worker sent; ``idp users unlock`` is the real
console script on the server's settings.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from idp.accounts.users import create_user
from idp.oauth.clients import create_client

from . import test_browser
from .conftest import PASSWORD, run_idp
from .flows import RegisteredClient, authorize_params, pkce_pair
from .services import MailingServer, mailing_server, text_of
from .test_browser import RelyingApp, exchange, verify_id_token

# The relying app of the browser tests.
relying_app = test_browser.relying_app

WRONG = "not the password at all"
LOCKED_SUBJECT = "Your account is locked for 30 minutes"


@pytest.fixture
def server(base_environ: dict[str, str], own_database_url: str, tmp_path: Path) -> Iterator[MailingServer]:
    """``idp serve`` on a database of this test's own, mailing to an aiosmtpd sink."""
    with mailing_server(base_environ | {"IDP_DATABASE_URL": own_database_url}, tmp_path / "serve.log") as server:
        yield server


def sign_in(page: Any, email: str, password: str) -> None:
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("button[type=submit]")


def refusal(page: Any) -> str:
    """What the sign-in page said, after checking that it is still the sign-in page."""
    assert urlsplit(page.url).path == "/login", page.url
    return page.locator('[role="alert"]').inner_text()


def test_browser_lockout_email_unlock_and_sign_in_at_the_relying_app(browser, server, relying_app: RelyingApp):
    live = server.live
    with server.ctx.db.begin() as db:
        user = create_user(db, email=f"locked-{secrets.token_hex(4)}@example.com", password=PASSWORD, verified=True)
        made = create_client(
            db,
            server.ctx.secret_key,
            name="Lockout app",
            redirect_uris=[relying_app.origin + "/cb"],
            first_party=True,
            allow_http=True,
        )
        user_id, email = user.id, user.email or ""
        client = RegisteredClient(made.client.id, made.secret, relying_app.origin + "/cb")

    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        verifier, challenge = pkce_pair()
        params = authorize_params(client, challenge)
        page.goto(f"{live.url}/authorize?{urlencode(params)}")
        assert urlsplit(page.url).path == "/login", page.url

        # Five wrong passwords lock the account; each one is told the same thing.
        alerts = []
        for _ in range(5):
            sign_in(page, email, WRONG)
            alerts.append(refusal(page))
        assert len(set(alerts)) == 1 and alerts[0], alerts

        # The right password is refused exactly alike: the page does not tell a stranger of the lock.
        sign_in(page, email, PASSWORD)
        assert refusal(page) == alerts[0]
        assert "lock" not in alerts[0].lower()
        assert relying_app.callbacks == []
        assert not [c for c in context.cookies() if c["name"].endswith("idp_session")]

        # The owner hears of it by email, with the way to reset.
        body = text_of(server.sink.wait_for(email, LOCKED_SUBJECT))
        assert "5 times in a row" in body
        assert f"{live.url}/password/forgot" in body
        assert PASSWORD not in body and WRONG not in body

        # An operator ends the lock; the right password now reaches the relying app with a code.
        result = run_idp(live.environ, "users", "unlock", user_id)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"id": user_id, "unlocked": True}
        page.fill("input[name=username]", email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(relying_app.origin + "/**")
        callback = relying_app.callbacks[-1]
        assert urlsplit(callback.url).path == "/cb"
        assert callback.params["state"] == params["state"]
        tokens = exchange(live, client, callback.params["code"], verifier)
        claims = verify_id_token(live, client, tokens["id_token"])
        assert claims["sub"] == user_id and claims["amr"] == ["pwd"]
    finally:
        context.close()
