"""A single-page app on another origin, written with oidc-client-ts from npm, in Chromium against a
live ``idp serve``: it signs in (code flow with PKCE, the hosted login page filled in), reads
UserInfo, refreshes silently with a rotated refresh token and signs out; a page of an origin no
client registered cannot read what the token endpoint answers.

The library is installed from ``tests/spa/package-lock.json`` with ``npm ci`` the first time a run
needs it (the gate installs nothing for it); its browser build is served as it ships, no bundler.
The app (``tests/spa/app.js``) is served with its settings by a small HTTP server of the test's own,
on a port, and so an origin, of its own.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import LiveServer
from .services import unavailable

SPA = Path(__file__).parent / "spa"
LIBRARY = SPA / "node_modules" / "oidc-client-ts" / "dist" / "browser" / "oidc-client-ts.js"
STATES = ("ready", "signed-in", "signed-out", "failed")
FETCH = """async ([url, headers, form]) => {
    const init = form ? {method: "POST", headers, body: new URLSearchParams(form)} : {headers};
    try {
        const response = await fetch(url, init);
        return {status: response.status, body: await response.text()};
    } catch (error) {
        return {blocked: String(error)};
    }
}"""


def _installed_version() -> str | None:
    installed = LIBRARY.parents[2] / "package.json"
    return json.loads(installed.read_text())["version"] if installed.exists() and LIBRARY.exists() else None


@pytest.fixture(scope="session")
def oidc_client_ts() -> Path:
    """The browser build of the locked oidc-client-ts, installed by ``npm ci`` when missing or not
    the locked version. Two runs side by side install it once: the lock file is locked meanwhile."""
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed (apt-get install npm); the single-page app tests are skipped")
    with (SPA / "package-lock.json").open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        locked = json.load(lock)["packages"]["node_modules/oidc-client-ts"]["version"]
        if _installed_version() != locked:
            subprocess.run(
                [str(npm), "ci", "--no-audit", "--no-fund"], cwd=SPA, check=True, capture_output=True, timeout=300
            )
    return LIBRARY


class _AppHandler(BaseHTTPRequestHandler):
    server: SpaServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        path = urlsplit(self.path).path
        if path == "/config.json":
            self._send(json.dumps(self.server.config).encode(), "application/json")
        elif path == "/oidc-client-ts.js":
            self._send(self.server.library.read_bytes(), "text/javascript")
        elif path == "/app.js":
            self._send((SPA / "app.js").read_bytes(), "text/javascript")
        elif path == "/favicon.ico":
            self.send_error(404)
        else:
            self._send((SPA / "index.html").read_bytes(), "text/html; charset=utf-8")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class SpaServer(ThreadingHTTPServer):
    """The app's files on an origin of their own; ``config`` is what the app reads at start."""

    daemon_threads = True

    def __init__(self, library: Path, authority: str) -> None:
        super().__init__(("127.0.0.1", 0), _AppHandler)
        self.library = library
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"
        self.config: dict[str, str] = {"authority": authority}


@pytest.fixture
def serve_spa(oidc_client_ts: Path, live_server: LiveServer) -> Iterator[Any]:
    """Start the app on a new origin; every server stops with the test."""
    servers: list[SpaServer] = []

    def serve() -> SpaServer:
        server = SpaServer(oidc_client_ts, live_server.url)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def spa(serve_spa, make_client) -> SpaServer:  # type: ignore[no-untyped-def]
    """The app, registered as a public client with its origin."""
    server: SpaServer = serve_spa()
    client = make_client(
        name="Single-page app",
        redirect_uris=[server.origin + "/callback"],
        post_logout_redirect_uris=[server.origin + "/signed-out"],
        auth_method="none",
        web_origins=[server.origin],
    )
    server.config["client_id"] = client.client_id
    return server


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def wait_for_state(page: Any, expected: str) -> None:
    page.wait_for_function(f"{list(STATES)}.includes(document.body.dataset.state)")
    state = page.evaluate("document.body.dataset.state")
    assert state == expected, page.text_content("#status")


def open_app(page: Any, origin: str) -> None:
    page.goto(origin + "/")
    wait_for_state(page, "ready")


def sign_in(page: Any, spa: SpaServer, server: LiveServer, email: str, password: str) -> None:
    """Through the app's ``signinRedirect``, the hosted login and consent pages, and back."""
    open_app(page, spa.origin)
    page.evaluate("() => { spa.signIn(); }")
    page.wait_for_url(server.url + "/login**")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert urlsplit(page.url).path == "/consent", page.url
    page.click("button[name=decision][value=allow]")
    page.wait_for_url(spa.origin + "/**")
    wait_for_state(page, "signed-in")


def test_a_single_page_app_signs_in_reads_userinfo_refreshes_and_signs_out(page, spa, live_server, make_user):
    person = make_user(name="Ada Browser")
    sign_in(page, spa, live_server, person.email, person.password)
    signed_in = page.evaluate("spa.tokens()")
    assert signed_in["sub"] == person.id
    assert signed_in["refresh_token"], "offline_access gives the app a refresh token"

    info = page.evaluate("spa.userinfo()")
    assert info["status"] == 200, info
    assert info["body"]["sub"] == person.id and info["body"]["email"] == person.email

    refreshed = page.evaluate("spa.refresh()")
    assert refreshed["sub"] == person.id
    assert refreshed["refresh_token"] != signed_in["refresh_token"], "the refresh token is rotated"
    assert refreshed["access_token"] != signed_in["access_token"]
    assert page.evaluate("spa.tokens()") == refreshed
    assert page.evaluate("spa.userinfo()")["status"] == 200

    page.evaluate("() => { spa.signOut(); }")
    page.wait_for_url(spa.origin + "/signed-out**")
    wait_for_state(page, "signed-out")
    spent = httpx.post(live_server.url + "/token", data=refresh_form(spa, refreshed["refresh_token"]))
    assert spent.status_code == 400 and spent.json()["error"] == "invalid_grant", "revoked on sign-out"
    gone = httpx.get(live_server.url + "/userinfo", headers={"Authorization": f"Bearer {refreshed['access_token']}"})
    assert gone.status_code == 401, "the access token is revoked on sign-out too"

    open_app(page, spa.origin)
    page.evaluate("() => { spa.signIn(); }")
    page.wait_for_url(live_server.url + "/login**")  # the provider's session ended as well


def test_a_page_of_an_unregistered_origin_cannot_read_the_token_response(page, spa, serve_spa, live_server, make_user):
    person = make_user()
    sign_in(page, spa, live_server, person.email, person.password)
    tokens = page.evaluate("spa.tokens()")
    stranger: SpaServer = serve_spa()
    stranger.config["client_id"] = spa.config["client_id"]
    open_app(page, stranger.origin)

    posted = page.evaluate(FETCH, [live_server.url + "/token", {}, refresh_form(spa, tokens["refresh_token"])])
    assert "TypeError" in posted.get("blocked", ""), posted
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    asked = page.evaluate(FETCH, [live_server.url + "/userinfo", bearer, None])
    assert "TypeError" in asked.get("blocked", ""), asked
    discovery = page.evaluate(FETCH, [live_server.url + "/.well-known/openid-configuration", {}, None])
    assert discovery.get("status") == 200, "discovery is for everyone"

    open_app(page, spa.origin)
    refused = page.evaluate(FETCH, [live_server.url + "/token", {}, refresh_form(spa, "not-a-refresh-token")])
    assert refused.get("status") == 400, "the app's own origin reads even a refusal"
    assert json.loads(refused["body"])["error"] == "invalid_grant"


def refresh_form(spa: SpaServer, refresh_token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": spa.config["client_id"]}
