"""Languages: the order a page's language is chosen in, the switcher, Persian right to left, the
catalogs, and messages written in the recipient's language.

Messages are read from the outbox (opened as the worker would) on an app of this module's own
database, so that no delivery worker of another test sends them first.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from gettext import GNUTranslations
from pathlib import Path
from typing import Any

import pytest
from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.users import create_user
from idp.catalogs import LOCALE_DIR, OWN_NAMES, RIGHT_TO_LEFT, available
from idp.languages import Languages
from idp.messaging.outbox import render_sms
from idp.security.sealing import OUTBOX, Sealer
from idp.settings import SettingsError
from idp.storage import OutboxMessage, User

from .conftest import PASSWORD, make_settings, passwords_hashed_once
from .flows import ask_for_code, authorize_params, ctx_of, hidden_fields, in_persian, pkce_pair, query_of
from .services import running_app

ROOT = Path(__file__).parent.parent
PERSIAN_PAGE = '<html lang="fa" dir="rtl">'
ENGLISH_PAGE = '<html lang="en" dir="ltr">'
PERSIAN_SIGN_IN = "<h1>ورود</h1>"
ENGLISH_SIGN_IN = "<h1>Sign in</h1>"


@pytest.fixture(scope="module")
def site_environ(module_environ: dict[str, str]) -> dict[str, str]:
    return module_environ


@pytest.fixture
def site(site_environ: dict[str, str]) -> Iterator[TestClient]:
    with running_app(site_environ, IDP_DELIVERY_WORKER="off") as client:
        yield client


def new_person(client: TestClient, tag: str) -> User:
    email = f"{tag}-{secrets.token_hex(4)}@example.com"
    with ctx_of(client).db.begin() as db, passwords_hashed_once():
        user = create_user(db, email=email, password=PASSWORD, verified=True)
        db.expunge(user)
        return user


def sent_to(client: TestClient, recipient: str) -> list[dict[str, str]]:
    """What was queued for ``recipient``, opened as the delivery worker opens it."""
    ctx = ctx_of(client)
    with ctx.db() as db:
        rows = db.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == recipient).order_by(OutboxMessage.created_at)
        )
        return [json.loads(Sealer(ctx.secret_key, OUTBOX).open(row.body or "")) for row in rows]


def switch(client: TestClient, page: str, locale: str) -> Any:
    """Press the switcher's button for ``locale`` on ``page``."""
    shown = client.get(page)
    action = re.search(r'<form method="post" action="(/language\?[^"]+)" class="languages"', shown.text)
    assert action, shown.text
    return client.post(action.group(1).replace("&amp;", "&"), data={**hidden_fields(shown.text), "locale": locale})


def sign_in(client: TestClient, email: str) -> None:
    page = client.get("/login")
    response = client.post("/login", data={**hidden_fields(page.text), "username": email, "password": PASSWORD})
    assert response.headers.get("location") == "/account", response.text


# --- the order the language is chosen in --------------------------------------------------------


def test_discovery_lists_the_languages(http):
    assert http.get("/.well-known/openid-configuration").json()["ui_locales_supported"] == ["en", "fa"]


def test_english_is_the_default_left_to_right(http):
    page = http.get("/login")
    assert ENGLISH_PAGE in page.text and ENGLISH_SIGN_IN in page.text


def test_ui_locales_on_the_page_chooses_persian_right_to_left(http):
    page = http.get("/login", params={"ui_locales": "de fa-IR en"})
    assert PERSIAN_PAGE in page.text and PERSIAN_SIGN_IN in page.text


@pytest.mark.parametrize(
    ("header", "expected"),
    [("fa-IR,fa;q=0.9,en;q=0.8", "fa"), ("en;q=0.5, fa;q=0.8", "fa"), ("fa;q=0, en", "en"), ("de, *", "en")],
)
def test_accept_language_chooses_when_nothing_else_does(http, header, expected):
    page = http.get("/login", headers={"Accept-Language": header})
    assert f'<html lang="{expected}"' in page.text


def test_the_default_locale_setting(base_environ):
    with running_app(base_environ, IDP_DEFAULT_LOCALE="fa") as client:
        assert PERSIAN_PAGE in client.get("/login").text
        assert ENGLISH_PAGE in client.get("/login", headers={"Accept-Language": "en"}).text


def test_a_default_locale_without_a_catalog_stops_start_up(base_environ):
    with pytest.raises(SettingsError, match="IDP_DEFAULT_LOCALE"):
        make_settings(base_environ, IDP_DEFAULT_LOCALE="de")


def test_ui_locales_of_the_authorization_request_holds_on_every_page_of_the_sign_in(http, make_client, make_user):
    client = make_client()
    person = make_user()
    _, challenge = pkce_pair()
    start = http.get("/authorize", params=authorize_params(client, challenge, ui_locales="fa"))
    login = start.headers["location"]
    assert "ui_locales" not in login
    page = http.get(login)
    assert PERSIAN_PAGE in page.text and PERSIAN_SIGN_IN in page.text
    wrong = http.post("/login", data={**hidden_fields(page.text), "username": person.email, "password": "not it"})
    assert PERSIAN_PAGE in wrong.text
    assert "ایمیل، شماره تلفن یا رمز عبور درست نیست." in wrong.text, "the refusal is in Persian too"
    request_id = query_of(login)["request"]
    assert PERSIAN_PAGE in http.get("/login/code", params={"request": request_id}).text
    asked = ask_for_code(http, person.email, request_id)
    assert asked.headers["location"] == "/login/verify"
    code_page = http.get("/login/verify")
    assert PERSIAN_PAGE in code_page.text and "کد خود را وارد کنید" in code_page.text


def test_accept_language_yields_to_ui_locales(http):
    page = http.get("/login", params={"ui_locales": "en"}, headers={"Accept-Language": "fa"})
    assert ENGLISH_PAGE in page.text


# --- the switcher -------------------------------------------------------------------------------


def test_every_page_has_the_switcher(http):
    for path in ("/login", "/login/code", "/register", "/password/forgot"):
        page = http.get(path)
        assert re.search(
            r'<button type="submit" name="locale" value="fa" lang="fa" dir="rtl">فارسی</button>', page.text
        )


def test_the_switcher_remembers_the_choice_over_ui_locales_and_accept_language(http):
    response = switch(http, "/login?ui_locales=en", "fa")
    assert response.status_code == 303 and response.headers["location"] == "/login?ui_locales=en"
    assert any(c.startswith("idp_locale=fa") for c in response.headers.get_list("set-cookie"))
    assert PERSIAN_PAGE in http.get(response.headers["location"], headers={"Accept-Language": "en"}).text
    assert ENGLISH_PAGE in http.get(switch(http, "/login", "en").headers["location"]).text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "/\t/evil.example"])
def test_the_switcher_goes_back_only_to_this_site(http, target):
    page = http.get("/login")
    response = http.post("/language", params={"next": target}, data={**hidden_fields(page.text), "locale": "fa"})
    assert response.status_code == 303 and response.headers["location"] == "/account"


def test_the_switcher_needs_the_csrf_token(http):
    http.get("/login")
    response = http.post("/language", params={"next": "/login"}, data={"locale": "fa"})
    assert response.status_code == 400
    assert not any(c.startswith("idp_locale=") for c in response.headers.get_list("set-cookie"))


def test_an_unknown_language_changes_nothing(http):
    response = switch(http, "/login", "xx")
    assert response.status_code == 303
    assert not any(c.startswith("idp_locale=") for c in response.headers.get_list("set-cookie"))


def test_switching_while_signed_in_saves_the_language_on_the_person(site, browsers):
    person = new_person(site, "saved")
    sign_in(site, person.email)
    assert switch(site, "/account", "fa").headers["location"] == "/account"
    with ctx_of(site).db() as db:
        assert db.get(User, person.id).locale == "fa"  # type: ignore[union-attr]

    elsewhere = browsers(application=site.app)
    sign_in(elsewhere, person.email)
    page = elsewhere.get("/account", headers={"Accept-Language": "en"})
    assert PERSIAN_PAGE in page.text, "the saved language outranks the browser's"


def test_a_saved_tag_without_a_catalog_of_its_own_is_served_by_the_nearest_and_kept(site, browsers):
    """An imported ``fa-IR`` is Persian; a ``de-AT`` idp does not speak is kept as the person's
    (the ``locale`` claim), shown on the profile form, and a save of the form does not lose it."""
    person = new_person(site, "nearest")
    with ctx_of(site).db.begin() as db:
        db.get(User, person.id).locale = "fa-IR"  # type: ignore[union-attr]
    sign_in(site, person.email)
    assert PERSIAN_PAGE in site.get("/account", headers={"Accept-Language": "en"}).text

    with ctx_of(site).db.begin() as db:
        db.get(User, person.id).locale = "de-AT"  # type: ignore[union-attr]
    page = site.get("/account", headers={"Accept-Language": "en"})
    assert PERSIAN_PAGE not in page.text
    assert '<option value="de-AT" lang="de-AT" dir="ltr" selected>de-AT</option>' in page.text
    form = {**hidden_fields(page.text), "locale": "de-AT", "given_name": "Ada"}
    assert site.post("/account/profile", data=form).status_code == 303
    with ctx_of(site).db() as db:
        saved = db.get(User, person.id)
        assert saved is not None and (saved.locale, saved.given_name) == ("de-AT", "Ada")


# --- messages in the recipient's language --------------------------------------------------------


@pytest.mark.parametrize("saved", ["fa", "fa-IR"])
def test_a_code_goes_in_the_recipients_saved_language(site, saved):
    person = new_person(site, f"saved-code-{saved}")
    with ctx_of(site).db.begin() as db:
        db.get(User, person.id).locale = saved  # type: ignore[union-attr]
    ask_for_code(site, person.email)
    [email] = sent_to(site, person.email)
    assert email["subject"].startswith("کد ورود شما: ")
    assert "کد یک‌بارمصرف شما" in email["text"] and "<strong>" in email["html"]


def test_a_code_to_someone_new_goes_in_the_language_of_the_page(site):
    email = f"new-{secrets.token_hex(4)}@example.com"
    page = site.get("/login/code", params={"ui_locales": "fa"})
    assert PERSIAN_PAGE in page.text
    response = site.post("/login/code?ui_locales=fa", data={**hidden_fields(page.text), "identifier": email})
    assert response.status_code == 303
    [sent] = sent_to(site, email)
    assert sent["subject"].startswith("کد ورود شما: ")


def test_a_persian_sms_and_a_code_typed_in_persian_digits(site_environ):
    phone = "+989121234599"
    with running_app(site_environ, IDP_DELIVERY_WORKER="off", IDP_PHONE_DEFAULT_REGION="IR") as client:
        switch(client, "/login/code", "fa")
        ask_for_code(client, in_persian("09121234599"))
        [sms] = sent_to(client, phone)
        found = re.fullmatch(r"کد شما: (\d{6})\nتا 5 دقیقه معتبر است\. آن را به کسی ندهید\.", sms["text"])
        assert found, sms["text"]
        page = client.get("/login/verify")
        response = client.post("/login/verify", data={**hidden_fields(page.text), "code": in_persian(found.group(1))})
        assert response.status_code == 303 and response.headers["location"] == "/account"


def ucs2_segments(text: str) -> int:
    """How many SMS a text in UCS-2 takes: 70 UTF-16 units alone, 67 each when concatenated."""
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


@pytest.mark.parametrize("tag", ["en", "fa"])
@pytest.mark.parametrize("template", [path.stem for path in (ROOT / "idp/templates/sms").glob("*.txt")])
def test_every_sms_fits_in_two_segments(tag, template):
    """Kavenegar and Twilio send a text beyond two segments as three or more messages, each paid for;
    the longest body is the one with the longest code (8 digits) and a two-digit lifetime."""
    language = Languages.load().by_tag[tag]
    context = {"code": "8" * 8, "minutes": 60, "site_name": "x" * 30, "when": "2026-12-31 23:59 UTC"}
    body = render_sms(template, context, language)
    assert ucs2_segments(body) <= 2, (len(body), body)
    if tag == "fa":
        assert ucs2_segments(body) == 1, "a Persian code fits in one segment"


# --- the catalogs ---------------------------------------------------------------------------------


def test_every_language_translates_every_message_and_keeps_its_placeholders():
    for path in LOCALE_DIR.glob("*/LC_MESSAGES/messages.po"):
        catalog = read_po(path.open("rb"))
        assert list(catalog.check()) == [], path
        if path.parent.parent.name != "en":
            untranslated = [m.id for m in catalog if m.id and not (all(m.string) if m.pluralizable else m.string)]
            assert untranslated == [], path


def test_every_compiled_catalog_is_what_its_source_compiles_to():
    """idp reads the ``.mo``: one left behind by an edit of its ``.po`` fails here (``pybabel compile``)."""
    for source in LOCALE_DIR.glob("*/LC_MESSAGES/messages.po"):
        compiled = io.BytesIO()
        write_mo(compiled, read_po(source.open("rb")))
        compiled.seek(0)
        with source.with_suffix(".mo").open("rb") as shipped:
            assert GNUTranslations(shipped)._catalog == GNUTranslations(compiled)._catalog, source


@pytest.mark.parametrize("tag", available())
def test_each_language_has_its_own_name_and_direction_as_babel_gives_them(tag):
    locale = Locale.parse(tag)
    assert OWN_NAMES[tag] == locale.get_display_name(locale)
    assert (tag in RIGHT_TO_LEFT) == (locale.character_order == "right-to-left")


@pytest.mark.parametrize(
    ("preferred", "expected"),
    [(["de", "fa-IR", "en"], "fa"), (["FA"], "fa"), (["en-GB", "fa"], "en"), (["de", ""], None), ([], None)],
)
def test_negotiation_takes_the_first_tag_with_a_catalog_or_its_language(preferred, expected):
    chosen = Languages.load().negotiate(preferred)
    assert (chosen.tag if chosen else None) == expected


def test_the_catalogs_hold_every_message_of_the_code(tmp_path):
    """A string added to a template or marked in Python without `pybabel update` fails here."""
    template = tmp_path / "messages.pot"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "pybabel"),
            "-q",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "N_",
            "-o",
            str(template),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    extracted = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(template.open("rb")) if m.id}
    for path in LOCALE_DIR.glob("*/LC_MESSAGES/messages.po"):
        held = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(path.open("rb")) if m.id}
        assert extracted - held == set(), path
        assert held - extracted == set(), path


# --- right to left ------------------------------------------------------------------------------


def test_code_and_phone_fields_stay_left_to_right_and_numeric(http, make_user):
    register = http.get("/register", params={"ui_locales": "fa"})
    assert PERSIAN_PAGE in register.text
    assert re.search(r'<input id="phone" name="phone" type="tel" inputmode="tel" dir="ltr"', register.text)
    ask_for_code(http, make_user().email)
    code_page = http.get("/login/verify", params={"ui_locales": "fa"})
    assert PERSIAN_PAGE in code_page.text
    assert re.search(r'<input id="code" name="code" type="text" inputmode="numeric" dir="ltr"', code_page.text)


# --- in Chromium --------------------------------------------------------------------------------


@pytest.fixture
def persian_tab(browser, live_server):  # type: ignore[no-untyped-def]
    """A Persian browser: its Accept-Language asks for Persian, as a phone set to Persian does."""
    context = browser.new_context(locale="fa-IR", viewport={"width": 480, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where the screenshots go: ``IDP_TEST_ARTIFACTS`` when set, to look at them after the run."""
    directory = Path(os.environ.get("IDP_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_persian_pages_in_chromium_are_right_to_left(persian_tab, live_server, make_user, artifacts):
    page = persian_tab
    page.goto(live_server.url + "/login")
    assert page.locator("html").get_attribute("dir") == "rtl"
    assert page.evaluate("getComputedStyle(document.querySelector('form')).direction") == "rtl"
    assert page.evaluate("getComputedStyle(document.querySelector('#username')).direction") == "ltr"
    heading, username = page.locator("h1").bounding_box(), page.locator("#username").bounding_box()
    assert heading and username
    assert heading["x"] + heading["width"] > username["x"] + username["width"] - 2, "the heading starts on the right"
    page.screenshot(path=str(artifacts / "fa-login.png"), full_page=True)

    page.goto(live_server.url + "/register")
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    assert page.evaluate("getComputedStyle(document.querySelector('#phone')).direction") == "ltr"
    page.screenshot(path=str(artifacts / "fa-register.png"), full_page=True)

    page.goto(live_server.url + "/login/code")
    page.fill("input[name=identifier]", make_user().email)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    page.fill("input[name=code]", in_persian("000000"))
    with page.expect_navigation():
        page.click("form[action='/login/verify'] button[type=submit]")
    alert = page.locator("[role=alert]")
    assert alert.text_content().strip().startswith("این کد درست نیست")  # type: ignore[union-attr]
    assert page.evaluate("getComputedStyle(document.querySelector('[role=alert]')).direction") == "rtl"
    assert page.evaluate("getComputedStyle(document.querySelector('#code')).direction") == "ltr"
    page.screenshot(path=str(artifacts / "fa-code-error.png"), full_page=True)
