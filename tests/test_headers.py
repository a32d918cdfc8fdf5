"""Security headers on every answer, and cookies that only the provider's own https origin can set.

Over http (the embedded default) cookies keep plain names; once the issuer is https, every cookie
idp sets, and every cookie it deletes, is ``__Host-`` prefixed, ``Secure``, ``Path=/`` and has no
``Domain``, and responses carry HSTS.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from idp.app import create_app

from .conftest import PASSWORD, make_settings
from .flows import authorize_params, emailed_code, hidden_fields, path_of, pkce_pair, submit_login

HTTPS_ISSUER = "https://idp.example"
TEMPLATES = Path(__file__).parent.parent / "idp" / "templates"
PAGES = ["/login", "/login/code", "/register", "/password/forgot", "/password/reset?token=x", "/verify-email?token=x"]


def directives(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    parsed = {}
    for directive in filter(None, (part.strip() for part in policy.split(";"))):
        name, *sources = directive.split()
        parsed[name] = sources
    return parsed


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def cookie_attributes(header: str) -> tuple[str, dict[str, str]]:
    """The cookie's name and its attributes, by lower-case name."""
    parsed = SimpleCookie()
    parsed.load(header)
    ((name, morsel),) = parsed.items()
    return name, {key: str(value) for key, value in morsel.items() if value}


@pytest.fixture
def https_site(base_environ: dict[str, str]) -> Iterator[TestClient]:
    app = create_app(make_settings(base_environ, IDP_ISSUER=HTTPS_ISSUER))
    try:
        with TestClient(app, base_url=HTTPS_ISSUER, follow_redirects=False) as client:
            yield client
    finally:
        app.state.ctx.close()


# --- headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_allow_no_inline_script_and_no_framing(http, path):
    response = http.get(path)
    assert response.headers["content-type"].startswith("text/html")
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert not [s for sources in policy.values() for s in sources if "unsafe" in s]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html")), ids=str)
def test_no_template_has_inline_script_or_style(template):
    """What the policy forbids would break in the browser: no page may need it."""
    source = (TEMPLATES / template).read_text()
    for tag in re.findall(r"<script\b[^>]*>", source):
        assert re.search(r'\ssrc="/static/[^"]+"', tag), tag
    assert "<style" not in source
    assert not re.search(r"\sstyle\s*=", source)
    assert not re.search(r"\son[a-z]+\s*=", source)
    assert "javascript:" not in source


@pytest.mark.parametrize("path", [*PAGES, "/login/verify", "/.well-known/openid-configuration", "/healthz"])
def test_every_answer_sends_no_referrer(http, path):
    assert http.get(path).headers["referrer-policy"] == "no-referrer"


def test_the_pages_and_answers_that_carry_codes_and_tokens_send_no_referrer(http, make_client, make_user):
    client = make_client(first_party=True)
    verifier, challenge = pkce_pair()
    started = http.get("/authorize", params=authorize_params(client, challenge, response_mode="form_post"))
    user = make_user()
    carrying_code = submit_login(http, started.headers["location"], user.email, PASSWORD)
    assert carrying_code.status_code == 200, carrying_code.text
    fields = hidden_fields(carrying_code.text)
    assert "code" in fields
    assert carrying_code.headers["referrer-policy"] == "no-referrer"
    assert '<meta name="referrer" content="no-referrer">' in carrying_code.text
    assert "script-src 'self'" in carrying_code.headers["content-security-policy"]
    tokens = http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": fields["code"],
            "redirect_uri": client.redirect_uri,
            "code_verifier": verifier,
        },
        auth=client.auth,
    )
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["referrer-policy"] == "no-referrer"
    assert tokens.headers["cache-control"] == "no-store"


def test_hsts_only_when_the_issuer_is_https(http, https_site):
    assert "strict-transport-security" not in http.get("/login").headers
    hsts = https_site.get("/login").headers["strict-transport-security"]
    assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31_536_000  # type: ignore[union-attr]
    assert "includeSubDomains" in hsts
    assert "strict-transport-security" in https_site.get("/.well-known/openid-configuration").headers


# --- cookies ------------------------------------------------------------------------------------


def test_over_http_cookies_have_plain_names(http):
    (header,) = set_cookies(http.get("/login"))
    name, attributes = cookie_attributes(header)
    assert name == "idp_csrf"
    assert "secure" not in attributes


def test_over_https_every_cookie_set_or_deleted_is_host_prefixed_and_secure(https_site, make_user, caplog):
    caplog.set_level(logging.INFO, logger="idp.messages")
    seen: list[str] = []

    def post(path: str, **fields: str) -> httpx.Response:
        page = https_site.get("/login")
        seen.extend(set_cookies(page))
        response = https_site.post(path, data={**hidden_fields(page.text), **fields})
        seen.extend(set_cookies(response))
        return response

    user = make_user()
    assert post("/login", username=user.email, password=PASSWORD).status_code == 303
    assert post("/login/code", identifier=user.email).status_code == 303
    assert post("/login/verify", code=emailed_code(https_site, caplog, user.email)).status_code == 303
    email = f"hdr-{secrets.token_hex(4)}@example.com"
    assert post("/register", email=email, password=PASSWORD, password_confirm=PASSWORD).status_code == 200
    account = https_site.get("/account")
    assert account.status_code == 200
    ended = post(f"/account/sessions/{hidden_session_id(account.text)}/end")
    assert path_of(ended.headers["location"]) == "/login"

    names = set()
    for header in seen:
        name, attributes = cookie_attributes(header)
        names.add(name)
        assert name.startswith("__Host-"), header
        assert "secure" in attributes, header
        assert attributes.get("path") == "/", header
        assert "domain" not in attributes, header
        assert attributes.get("httponly"), header
    assert names == {"__Host-idp_csrf", "__Host-idp_session", "__Host-idp_signin", "__Host-idp_registration"}
    deleted = [h for h in seen if h.startswith("__Host-idp_signin=") and "Max-Age=0" in h]
    assert deleted, "the pending sign-in cookie is deleted once the code signed in"
    ended_session = [h for h in seen if h.startswith("__Host-idp_session=") and "Max-Age=0" in h]
    assert ended_session, "ending the current session deletes its cookie"


def hidden_session_id(account_page: str) -> str:
    found = re.search(r'action="/account/sessions/([^"/]+)/end"', account_page)
    assert found, account_page
    return found.group(1)
