"""Debian's Chromium, driven by Playwright, through the hosted pages of a live ``idp serve``.

The relying app is a small HTTP server on a free port that answers its redirect URIs with a plain
page and records what the browser sent there (method, URL, form body). It is a real server rather than
``page.route`` because Playwright does not route the target of a redirect in this Chromium
(microsoft/playwright#33882): the 303 from the provider to the callback would go to the network.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest

from .conftest import LiveServer
from .flows import RegisteredClient, authorize_params, pkce_pair, query_of

CALLBACK_PAGE = b"<!doctype html><title>Relying app</title><p>back at the app</p>"
CALLBACK_PATHS = ("/cb", "/bye")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Callback:
    """What reached the relying app."""

    method: str
    url: str
    form: dict[str, str]

    @property
    def params(self) -> dict[str, str]:
        return self.form if self.method == "POST" else query_of(self.url)


class _RelyingAppHandler(BaseHTTPRequestHandler):
    server: RelyingApp

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._answer({})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self._answer(dict(parse_qsl(body, keep_blank_values=True)))

    def _answer(self, form: dict[str, str]) -> None:
        if urlsplit(self.path).path not in CALLBACK_PATHS:
            self.send_error(404)
            return
        self.server.callbacks.append(Callback(self.command, self.server.origin + self.path, form))
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(CALLBACK_PAGE)))
        self.end_headers()
        self.wfile.write(CALLBACK_PAGE)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class RelyingApp(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RelyingAppHandler)
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"
        self.callbacks: list[Callback] = []


@pytest.fixture
def relying_app() -> Iterator[RelyingApp]:
    server = RelyingApp()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dataclass
class Tab:
    page: Any
    server: LiveServer
    client: RegisteredClient
    app: RelyingApp
    console: list[str] = field(default_factory=list)
    documents: list[Any] = field(default_factory=list)

    @property
    def callbacks(self) -> list[Callback]:
        return self.app.callbacks

    def authorize(self, **overrides: str) -> tuple[dict[str, str], str]:
        verifier, challenge = pkce_pair()
        params = authorize_params(self.client, challenge, **overrides)
        self.page.goto(f"{self.server.url}/authorize?{urlencode(params)}")
        return params, verifier

    def path(self) -> str:
        return urlsplit(self.page.url).path

    def submit(self, selector: str) -> None:
        """Click and wait for the page the click leads to."""
        with self.page.expect_navigation():
            self.page.click(selector)

    def sign_in(self, email: str, password: str) -> None:
        assert self.path() == "/login", self.page.url
        self.page.fill("input[name=username]", email)
        self.page.fill("input[name=password]", password)
        self.submit("button[type=submit]")

    def wait_for_callback(self) -> Callback:
        self.page.wait_for_url(self.app.origin + "/**")
        assert self.callbacks, "the callback was not reached"
        return self.callbacks[-1]

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "Content-Security-Policy" in m]


@pytest.fixture
def person(make_user):  # type: ignore[no-untyped-def]
    return make_user(name="Grace Browser")


@pytest.fixture
def rp(make_client, relying_app: RelyingApp) -> RegisteredClient:  # type: ignore[no-untyped-def]
    return make_client(
        name="Browser app",
        redirect_uris=[relying_app.origin + "/cb"],
        post_logout_redirect_uris=[relying_app.origin + "/bye"],
    )


@pytest.fixture
def tab(browser, live_server: LiveServer, rp: RegisteredClient, relying_app: RelyingApp) -> Iterator[Tab]:  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    opened = Tab(page, live_server, rp, relying_app)
    page.on("console", lambda message: opened.console.append(f"{message.type}: {message.text}"))
    page.on(
        "response",
        lambda response: (
            opened.documents.append(response)
            if response.url.startswith(live_server.url) and response.request.resource_type == "document"
            else None
        ),
    )
    yield opened
    context.close()


def exchange(server: LiveServer, client: RegisteredClient, code: str, verifier: str) -> dict[str, Any]:
    response = httpx.post(
        server.url + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client.redirect_uri,
            "code_verifier": verifier,
        },
        auth=client.auth,
    )
    assert response.status_code == 200, response.text
    return response.json()


def verify_id_token(server: LiveServer, client: RegisteredClient, token: str) -> dict[str, Any]:
    key = jwt.PyJWKClient(server.url + "/jwks.json").get_signing_key_from_jwt(token).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=client.client_id, issuer=server.url)


def sign_in_and_allow(tab: Tab, email: str, password: str, **overrides: str) -> tuple[dict[str, str], str, Callback]:
    params, verifier = tab.authorize(**overrides)
    tab.sign_in(email, password)
    assert tab.path() == "/consent", tab.page.url
    tab.page.click("button[name=decision][value=allow]")
    return params, verifier, tab.wait_for_callback()


# --- signing in ---------------------------------------------------------------------------------


def test_sign_in_and_consent_reach_the_callback(tab, person, live_server, rp):
    params, verifier, callback = sign_in_and_allow(tab, person.email, person.password)
    assert callback.method == "GET"
    assert set(callback.params) == {"code", "state", "iss"}
    assert callback.params["state"] == params["state"]
    assert callback.params["iss"] == live_server.url
    tokens = exchange(live_server, rp, callback.params["code"], verifier)
    claims = verify_id_token(live_server, rp, tokens["id_token"])
    assert claims["sub"] == person.id
    assert claims["nonce"] == params["nonce"]
    assert claims["name"] == "Grace Browser"
    assert tab.csp_violations() == []


def test_keep_me_signed_in_makes_the_session_cookie_outlive_the_browser(tab, person, live_server):
    tab.authorize()
    checkbox = tab.page.get_by_label("Keep me signed in")
    assert checkbox.get_attribute("name") == "remember" and not checkbox.is_checked()
    checkbox.check()
    tab.sign_in(person.email, person.password)
    assert tab.path() == "/consent"
    (cookie,) = [c for c in tab.page.context.cookies(live_server.url) if c["name"].endswith("idp_session")]
    lifetime = cookie["expires"] - time.time()
    assert 2_592_000 - 60 < lifetime <= 2_592_000, "IDP_REMEMBER_TTL by default, not the browser's session"


def test_consent_page_lists_the_scopes(tab, person):
    tab.authorize(scope="openid email")
    tab.sign_in(person.email, person.password)
    assert tab.path() == "/consent"
    assert tab.page.locator("[data-scope]").evaluate_all("items => items.map(i => i.dataset.scope)") == [
        "openid",
        "email",
    ]
    assert tab.page.locator("button[name=decision][value=deny]").is_visible()


def test_wrong_password_shows_an_alert_and_stays(tab, person):
    tab.authorize()
    tab.sign_in(person.email, "not the password")
    assert tab.path() == "/login"
    alert = tab.page.locator('[role="alert"]')
    assert alert.count() == 1 and alert.is_visible()
    assert "not right" in alert.inner_text()
    assert tab.page.input_value("input[name=username]") == person.email
    assert tab.page.input_value("input[name=password]") == ""
    assert tab.callbacks == []
    # The right password on the same page still works.
    tab.page.fill("input[name=password]", person.password)
    tab.submit("button[type=submit]")
    assert tab.path() == "/consent"


def test_unknown_account_shows_the_same_alert(tab, person):
    tab.authorize()
    tab.sign_in(person.email, "not the password")
    known = tab.page.locator('[role="alert"]').inner_text()
    tab.sign_in("nobody-" + secrets.token_hex(4) + "@example.com", "not the password")
    assert tab.page.locator('[role="alert"]').inner_text() == known


def test_deny_returns_access_denied(tab, person, live_server):
    params, _ = tab.authorize()
    tab.sign_in(person.email, person.password)
    tab.page.click("button[name=decision][value=deny]")
    callback = tab.wait_for_callback()
    assert callback.params["error"] == "access_denied"
    assert callback.params["state"] == params["state"]
    assert callback.params["iss"] == live_server.url
    assert "code" not in callback.params


# --- single sign-on -----------------------------------------------------------------------------


def test_second_authorization_skips_the_password(tab, person, live_server, rp):
    first_params, first_verifier, first = sign_in_and_allow(tab, person.email, person.password)
    first_tokens = exchange(live_server, rp, first.params["code"], first_verifier)
    first_claims = verify_id_token(live_server, rp, first_tokens["id_token"])
    params, verifier = tab.authorize()
    callback = tab.wait_for_callback()
    assert len(tab.callbacks) == 2
    assert callback.params["state"] == params["state"] != first_params["state"]
    claims = verify_id_token(live_server, rp, exchange(live_server, rp, callback.params["code"], verifier)["id_token"])
    assert claims["sid"] == first_claims["sid"]
    assert claims["auth_time"] == first_claims["auth_time"]


def test_prompt_login_asks_for_the_password_again(tab, person):
    sign_in_and_allow(tab, person.email, person.password)
    tab.authorize(prompt="login")
    assert tab.path() == "/login"
    assert tab.page.locator("input[name=password]").is_visible()
    tab.sign_in(person.email, person.password)
    tab.wait_for_callback()
    assert len(tab.callbacks) == 2


# --- signing out --------------------------------------------------------------------------------


def test_logout_without_hint_asks_then_signs_out(tab, person, live_server):
    sign_in_and_allow(tab, person.email, person.password)
    tab.page.goto(live_server.url + "/logout")
    button = tab.page.locator("button[name=decision][value=logout]")
    assert button.is_visible()
    assert tab.page.locator("form[action='/logout'] input[name=csrf_token]").count() == 1
    tab.submit("button[name=decision][value=logout]")
    assert tab.path() == "/logout"
    assert "signed out" in tab.page.content()
    tab.authorize()
    assert tab.path() == "/login"
    assert len(tab.callbacks) == 1


def test_logout_with_hint_goes_back_to_the_app(tab, person, live_server, rp):
    _, verifier, callback = sign_in_and_allow(tab, person.email, person.password)
    id_token = exchange(live_server, rp, callback.params["code"], verifier)["id_token"]
    bye = rp.redirect_uri.replace("/cb", "/bye")
    query = urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": bye, "state": "see you"})
    tab.page.goto(f"{live_server.url}/logout?{query}")
    assert tab.page.url == bye + "?state=see+you"
    assert [(c.method, c.url) for c in tab.callbacks[1:]] == [("GET", bye + "?state=see+you")]
    tab.authorize()
    assert tab.path() == "/login"


# --- form_post ----------------------------------------------------------------------------------


def test_form_post_response_mode_posts_to_the_callback(tab, person, live_server, rp):
    """The auto-submitted form is a navigation of its own (no redirect), so ``page.route`` sees it."""
    routed: list[tuple[str, dict[str, str]]] = []

    def answer(route: Any) -> None:
        routed.append((route.request.method, dict(parse_qsl(route.request.post_data or ""))))
        route.fulfill(status=200, content_type="text/html", body=CALLBACK_PAGE)

    params, verifier = tab.authorize(response_mode="form_post")
    tab.sign_in(person.email, person.password)
    tab.page.route(rp.redirect_uri, answer)
    tab.page.click("button[name=decision][value=allow]")
    tab.page.wait_for_url(rp.redirect_uri)
    assert len(routed) == 1
    method, form = routed[0]
    assert method == "POST"
    assert set(form) == {"code", "state", "iss"}
    assert form["state"] == params["state"]
    assert form["iss"] == live_server.url
    assert tab.callbacks == []  # answered by the route, never by the app's server
    tokens = exchange(live_server, rp, form["code"], verifier)
    assert verify_id_token(live_server, rp, tokens["id_token"])["sub"] == person.id
    assert tab.csp_violations() == []


def test_form_post_reaches_the_app_server(tab, person, live_server, rp):
    params, _, callback = sign_in_and_allow(tab, person.email, person.password, response_mode="form_post")
    assert callback.method == "POST"
    assert callback.url == rp.redirect_uri
    assert set(callback.form) == {"code", "state", "iss"}
    assert callback.form["state"] == params["state"]


def test_form_post_error_is_posted_too(tab, person, live_server):
    params, _ = tab.authorize(response_mode="form_post")
    tab.sign_in(person.email, person.password)
    tab.page.click("button[name=decision][value=deny]")
    callback = tab.wait_for_callback()
    assert callback.method == "POST"
    assert callback.form["error"] == "access_denied"
    assert callback.form["state"] == params["state"]
    assert callback.form["iss"] == live_server.url
    assert "code" not in callback.form
    assert tab.csp_violations() == []


# --- the pages themselves -----------------------------------------------------------------------


def test_screenshot_of_the_sign_in_page(tab, tmp_path):
    tab.authorize()
    assert tab.path() == "/login"
    target = tmp_path / "sign-in.png"
    tab.page.screenshot(path=str(target), full_page=True)
    data = target.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000


def test_hosted_pages_carry_a_strict_csp_and_raise_no_violation(tab, person, live_server):
    sign_in_and_allow(tab, person.email, person.password)
    tab.page.goto(live_server.url + "/logout")
    paths = {urlsplit(r.url).path for r in tab.documents}
    assert {"/login", "/consent", "/logout"} <= paths
    for response in tab.documents:
        if response.status in (301, 302, 303, 307, 308):
            continue
        csp = response.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, response.url
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, response.url
        assert response.headers.get("x-content-type-options") == "nosniff"
    assert tab.csp_violations() == []


def test_console_catches_a_csp_violation(tab):
    """The check above can fail: an inline script on a hosted page is blocked and reported."""
    tab.authorize()
    ran = tab.page.evaluate(
        """() => new Promise(resolve => {
            document.addEventListener('securitypolicyviolation', () => resolve(window.__inline === true));
            const script = document.createElement('script');
            script.textContent = 'window.__inline = true';
            document.body.appendChild(script);
        })"""
    )
    assert ran is False
    tab.page.wait_for_timeout(200)
    assert tab.csp_violations(), tab.console
