"""Branding: the site's name on its pages and in its messages, a theme directory over the shipped
templates and static files, and the client's registered name, logo, policy and terms on the pages
a person signs in and consents on, with the logo's origin allowed by those pages' policy alone.

Apps run on this module's own database (``module_environ``), with the settings each test names.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.users import create_user
from idp.messaging.outbox import enqueue_sms
from idp.oauth.clients import create_client
from idp.security.sealing import OUTBOX, Sealer
from idp.settings import SettingsError
from idp.storage import OutboxMessage, now

from .conftest import PASSWORD, make_settings, passwords_hashed_once
from .flows import RegisteredClient, authorize_params, ctx_of, hidden_fields, path_of, submit_login
from .services import running_app, smtp_sink, text_of

SITE = "Acme ID"
LOGO = "https://cdn.shop.example/logo.png"
POLICY = "https://shop.example/privacy"
TERMS = "https://shop.example/terms"
THEMED_CSS = "body { background: #102030; }"
THEME_LOGO = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'


@pytest.fixture(scope="module")
def site_environ(module_environ: dict[str, str]) -> dict[str, str]:
    return module_environ


@pytest.fixture
def site(site_environ: dict[str, str]) -> Iterator[TestClient]:
    with running_app(site_environ, IDP_SITE_NAME=SITE, IDP_DELIVERY_WORKER="off") as client:
        yield client


def new_email(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(4)}@example.com"


def new_person(client: TestClient, tag: str, **extra: Any) -> str:
    email = new_email(tag)
    with ctx_of(client).db.begin() as db, passwords_hashed_once():
        create_user(db, email=email, password=PASSWORD, verified=True, **extra)
    return email


def register_client(client: TestClient, **branding: str) -> RegisteredClient:
    """A client asking for consent, with ``branding`` (``name``, ``logo_uri``, ...)."""
    with ctx_of(client).db.begin() as db:
        made = create_client(
            db,
            ctx_of(client).secret_key,
            name=branding.pop("name", "Shop"),
            redirect_uris=["https://shop.example/cb"],
            allow_http=True,
            **branding,
        )
        return RegisteredClient(made.client.id, made.secret, "https://shop.example/cb")


def sent_to(client: TestClient, recipient: str) -> list[dict[str, str]]:
    """What was queued for ``recipient``, opened as the delivery worker opens it."""
    ctx = ctx_of(client)
    with ctx.db() as db:
        rows = db.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == recipient).order_by(OutboxMessage.created_at)
        )
        return [json.loads(Sealer(ctx.secret_key, OUTBOX).open(row.body or "")) for row in rows]


def sign_in_page(client: TestClient, registered: RegisteredClient) -> str:
    """Where the authorization request sends the browser: the sign-in page, with its request."""
    response = client.get("/authorize", params=authorize_params(registered))
    assert response.status_code == 303, response.text
    return response.headers["location"]


def consent_page(client: TestClient, registered: RegisteredClient, email: str) -> Any:
    response = submit_login(client, sign_in_page(client, registered), email, PASSWORD)
    assert response.status_code == 303 and response.headers["location"].startswith("/consent"), response.text
    return client.get(path_of(response.headers["location"]))


def img_src(response: Any) -> str:
    found = re.search(r"img-src ([^;]*)", response.headers["content-security-policy"])
    assert found, response.headers["content-security-policy"]
    return found.group(1)


# --- the site's name ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/login/code", "/register", "/password/forgot"])
def test_every_page_names_the_site(site, path):
    page = site.get(path).text
    assert re.search(rf"<title>[^<]+ · {SITE}</title>", page), page
    assert f'<p class="site-name">{SITE}</p>' in page


def test_the_default_site_name_is_idp(site_environ):
    with running_app(site_environ, IDP_DELIVERY_WORKER="off") as client:
        assert '<p class="site-name">idp</p>' in client.get("/login").text


def test_the_consent_page_names_the_site(site):
    email = new_person(site, "consent")
    page = consent_page(site, register_client(site), email)
    assert page.status_code == 200
    assert f"<title>Allow access · {SITE}</title>" in page.text


def test_an_email_names_the_site_in_its_subject_and_body(site_environ):
    """Delivered over SMTP by the app's own worker, as a mailbox gets it."""
    sink, controller = smtp_sink()
    try:
        smtp = {"IDP_EMAIL_BACKEND": "smtp", "IDP_SMTP_HOST": "127.0.0.1", "IDP_SMTP_PORT": str(controller.port)}
        with running_app(site_environ, IDP_SITE_NAME=SITE, **smtp) as web:
            email = new_person(web, "mail")
            page = web.get("/password/forgot")
            assert web.post("/password/forgot", data={**hidden_fields(page.text), "email": email}).status_code == 200
            message = sink.wait_for(email, "Reset your password")
    finally:
        controller.stop()
    assert message["Subject"] == f"Reset your password · {SITE}"
    assert f"Sent by {SITE}." in text_of(message)
    assert f"Sent by {SITE}." in message.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_a_text_message_names_the_site_where_it_names_the_product(site):
    to = f"+1555{secrets.randbelow(10**7):07d}"
    with ctx_of(site).db.begin() as db:
        enqueue_sms(db, ctx_of(site).secret_key, to, "test_message", {"code": "123456"}, useful_until=now() + 60)
    [sms] = sent_to(site, to)
    assert sms["text"] == f"{SITE} test code: 123456"


def test_a_site_name_must_be_one_short_line(base_environ):
    for bad in ("x" * 31, "Acme\nID"):
        with pytest.raises(SettingsError, match="^IDP_SITE_NAME: "):
            make_settings(base_environ, IDP_SITE_NAME=bad)


# --- a theme directory ----------------------------------------------------------------------------


@pytest.fixture
def theme(tmp_path: Path) -> Path:
    """A theme changing one page template (the site's name, now with a logo), one shipped static
    file (the style sheet), adding one (the logo), and rewording one message part."""
    (tmp_path / "templates" / "email").mkdir(parents=True)
    (tmp_path / "static").mkdir()
    (tmp_path / "templates" / "brand.html").write_text(
        '<p class="site-name"><img src="/static/logo.svg" alt="{{ site_name }}"> {{ site_name }} themed</p>\n'
    )
    (tmp_path / "templates" / "email" / "signature.txt").write_text("-- \nThe {{ site_name }} team\n")
    (tmp_path / "static" / "style.css").write_text(THEMED_CSS)
    (tmp_path / "static" / "logo.svg").write_bytes(THEME_LOGO)
    return tmp_path


def test_a_theme_changes_the_sign_in_pages_name_logo_and_one_template(site_environ, theme):
    shipped_script = (Path(__file__).parent.parent / "idp" / "static" / "form_post.js").read_bytes()
    with running_app(site_environ, IDP_SITE_NAME=SITE, IDP_THEME_DIR=str(theme), IDP_DELIVERY_WORKER="off") as web:
        sign_in = web.get("/login").text
        assert f'<p class="site-name"><img src="/static/logo.svg" alt="{SITE}"> {SITE} themed</p>' in sign_in
        assert 'name="password"' in sign_in, "the sign-in page itself is the shipped one"
        assert f"{SITE} themed" in web.get("/register").text, "every page gets the themed template"
        assert web.get("/static/logo.svg").content == THEME_LOGO
        assert web.get("/static/style.css").text == THEMED_CSS
        assert web.get("/static/form_post.js").content == shipped_script, "the shipped file where the theme has none"
        assert web.get("/static/nothing.css").status_code == 404

        email = new_person(web, "themed")
        page = web.get("/password/forgot")
        assert web.post("/password/forgot", data={**hidden_fields(page.text), "email": email}).status_code == 200
        [reset] = sent_to(web, email)
    assert reset["subject"] == f"Reset your password · {SITE}", "the shipped subject"
    assert reset["text"].endswith(f"-- \nThe {SITE} team\n"), "the theme's signature"


def test_without_a_theme_the_shipped_look(site):
    assert "themed" not in site.get("/login").text
    assert site.get("/static/logo.svg").status_code == 404
    assert site.get("/static/style.css").text.startswith("body {")


def test_a_theme_directory_that_is_not_there_stops_start_up(base_environ, tmp_path):
    with pytest.raises(SettingsError, match="^IDP_THEME_DIR: .* is not a directory"):
        make_settings(base_environ, IDP_THEME_DIR=str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    with pytest.raises(SettingsError, match="^IDP_THEME_DIR: "):
        make_settings(base_environ, IDP_THEME_DIR=str(tmp_path / "file"))
