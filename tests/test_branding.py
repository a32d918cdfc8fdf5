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
from markupsafe import escape
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.codes_vocabulary import Channel
from idp.accounts.users import create_user
from idp.messaging.outbox import enqueue
from idp.oauth.clients import ClientError, create_client
from idp.security.headers import CSP
from idp.security.sealing import OUTBOX, Sealer
from idp.settings import SettingsError
from idp.storage import OutboxMessage, now

from .conftest import PASSWORD, make_settings, passwords_hashed_once, run_idp
from .flows import RegisteredClient, ask_for_code, authorize_params, ctx_of, hidden_fields, path_of, submit_login
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
        enqueue(
            db, ctx_of(site).secret_key, Channel.SMS, to, "test_message", {"code": "123456"}, useful_until=now() + 60
        )
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


# --- the client's name, logo, policy and terms -----------------------------------------------------


def assert_branded(response: Any) -> None:
    page = response.text
    assert f'<img class="client-logo" src="{LOGO}" alt="Shop">' in page
    assert f'<a href="{POLICY}" rel="noopener noreferrer" target="_blank">Privacy policy of Shop</a>' in page
    assert f'<a href="{TERMS}" rel="noopener noreferrer" target="_blank">Terms of service of Shop</a>' in page
    assert img_src(response) == "'self' data: https://cdn.shop.example"


def assert_unbranded(response: Any) -> None:
    assert "client-logo" not in response.text and "client-links" not in response.text
    assert response.headers["content-security-policy"] == CSP


def test_the_sign_in_pages_show_the_clients_logo_policy_and_terms(site):
    branded = register_client(site, logo_uri=LOGO, policy_uri=POLICY, tos_uri=TERMS)
    login = site.get(path_of(sign_in_page(site, branded)))
    assert "to continue to <strong>Shop</strong>" in login.text
    assert_branded(login)
    request_id = re.search(r'name="request" value="([^"]+)"', login.text)
    assert request_id
    assert_branded(site.get("/login/code", params={"request": request_id.group(1)}))
    assert_branded(site.get("/register", params={"request": request_id.group(1)}))
    assert ask_for_code(site, new_person(site, "code"), request_id.group(1)).status_code == 303
    assert_branded(site.get("/login/verify"))


def test_the_consent_page_shows_the_clients_logo_policy_and_terms(site):
    branded = register_client(site, logo_uri=LOGO, policy_uri=POLICY, tos_uri=TERMS)
    consent = consent_page(site, branded, new_person(site, "consent"))
    assert "Shop wants to" in consent.text
    assert_branded(consent)


def test_a_client_without_them_shows_its_name_alone_and_the_policy_stays(site):
    plain = register_client(site, name="Plain")
    login = site.get(path_of(sign_in_page(site, plain)))
    assert "to continue to <strong>Plain</strong>" in login.text
    assert_unbranded(login)
    consent = consent_page(site, plain, new_person(site, "plain"))
    assert "Plain wants to" in consent.text
    assert_unbranded(consent)


def test_only_the_page_showing_a_logo_allows_its_origin(site):
    branded = register_client(site, logo_uri=LOGO)
    assert "cdn.shop.example" in img_src(site.get(path_of(sign_in_page(site, branded))))
    for path in ("/login", "/password/forgot", "/register"):
        assert site.get(path).headers["content-security-policy"] == CSP


def test_a_name_and_uris_with_quotes_and_markup_are_escaped(site):
    name = 'Evil "Corp" <script>alert(1)</script>'
    logo = "https://cdn.evil.example/logo.png?a='x'&b=1"
    evil = register_client(site, name=name, logo_uri=logo, policy_uri=logo)
    page = site.get(path_of(sign_in_page(site, evil))).text
    assert "<script>alert(1)" not in page
    assert f"to continue to <strong>{escape(name)}</strong>" in page
    assert f'alt="{escape(name)}"' in page
    escaped_logo = "https://cdn.evil.example/logo.png?a=&#39;x&#39;&amp;b=1"
    assert f'src="{escaped_logo}"' in page and f'href="{escaped_logo}"' in page


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)//https://x.example",
        "data:image/png;base64,AAAA",
        "/logo.png",
        "https://",
        'https://cdn.example/"><script>',
        "https://cdn.example/a b.png",
        "https://user@cdn.example/logo.png",
        "https://cdn.example;script-src *",
        "https://cdn.example/" + "x" * 2000,
    ],
)
def test_a_bad_uri_is_refused(site, uri):
    for option in ("logo_uri", "policy_uri", "tos_uri"):
        with pytest.raises(ClientError), ctx_of(site).db.begin() as db:
            create_client(db, "k", name="Bad", redirect_uris=["https://x.example/cb"], **{option: uri})


# --- the command --------------------------------------------------------------------------------


@pytest.fixture
def env(own_database_url: str, tmp_path: Path, base_environ: dict[str, str]) -> dict[str, str]:
    return {
        "IDP_DATABASE_URL": own_database_url,
        "IDP_KEYS_DIR": base_environ["IDP_KEYS_DIR"],
        "IDP_SECRET_KEY": base_environ["IDP_SECRET_KEY"],
        "IDP_ISSUER": "https://id.example",
        "HOME": str(tmp_path),
    }


def listed(env: dict[str, str]) -> list[dict[str, Any]]:
    result = run_idp(env, "clients", "list")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


CREATE = ("clients", "create", "--name", "Shop", "--redirect-uri", "https://shop.example/cb")


def test_clients_create_keeps_the_branding_and_shows_it(env):
    made = run_idp(env, *CREATE, "--logo-uri", LOGO, "--policy-uri", POLICY, "--tos-uri", TERMS)
    assert made.returncode == 0, made.stderr
    [client] = listed(env)
    assert client["client_id"] == json.loads(made.stdout)["client_id"]
    assert (client["logo_uri"], client["policy_uri"], client["tos_uri"]) == (LOGO, POLICY, TERMS)
    assert run_idp(env, *CREATE).returncode == 0
    assert [(c["logo_uri"], c["policy_uri"], c["tos_uri"]) for c in listed(env)][1] == (None, None, None)


@pytest.mark.parametrize(
    ("option", "uri"),
    [
        ("--logo-uri", "javascript:alert(1)"),
        ("--policy-uri", "http://shop.example/privacy"),
        ("--tos-uri", "https://shop.example/<terms>"),
        ("--logo-uri", "data:image/svg+xml,<svg/>"),
    ],
)
def test_clients_create_refuses_a_bad_branding_uri_and_writes_nothing(env, option, uri):
    """Exit status 2, nothing on stdout, one line on stderr naming the option."""
    result = run_idp(env, *CREATE, option, uri)
    assert (result.returncode, result.stdout) == (2, ""), result
    [line] = result.stderr.strip().splitlines()
    assert option in line and "Traceback" not in line
    assert listed(env) == []


def test_http_on_loopback_is_allowed(env):
    made = run_idp(env, *CREATE, "--logo-uri", "http://localhost:5173/logo.png")
    assert made.returncode == 0, made.stderr
    assert listed(env)[0]["logo_uri"] == "http://localhost:5173/logo.png"
