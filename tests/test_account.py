"""``/account``: profile and phone verification, the person's sessions, and changing the password."""

from __future__ import annotations

import html
import logging
import re
import secrets
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.passwords import verify_password
from idp.accounts.users import create_user
from idp.app import create_app
from idp.messaging.worker import deliver_due
from idp.migrate import upgrade
from idp.storage import AuditEvent, BrowserSession, User

from .conftest import CHROME_LINUX, PASSWORD, TEST_ISSUER, make_settings
from .flows import ctx_of, hidden_fields, tokens_for
from .services import running_app, smtp_sink, text_of

FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
NEW_PASSWORD = "a quite different passphrase 42"

_ALERT = re.compile(r'<[^>]*role="alert"[^>]*>(.*?)</', re.DOTALL)
_STATUS = re.compile(r'<[^>]*role="status"[^>]*>(.*?)</', re.DOTALL)
_SESSION = re.compile(r'<li data-session="([^"]+)"([^>]*)>(.*?)</li>', re.DOTALL)


def alert_text(response) -> str:  # type: ignore[no-untyped-def]
    found = _ALERT.findall(response.text)
    assert len(found) == 1, response.text
    return html.unescape(found[0]).strip()


def notice_text(response) -> str:  # type: ignore[no-untyped-def]
    found = _STATUS.search(response.text)
    assert found, response.text
    return html.unescape(found.group(1)).strip()


def random_phone() -> str:
    """A valid Iranian mobile number nobody else in the run uses, so resend limits never collide."""
    return f"+98912{secrets.randbelow(10_000_000):07d}"


@pytest.fixture
def sms_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="idp.messages")
    return caplog


def sign_in(browser: TestClient, email: str, password: str = PASSWORD) -> None:
    page = browser.get("/login")
    response = browser.post("/login", data={**hidden_fields(page.text), "username": email, "password": password})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/account"


def post_form(browser: TestClient, path: str, **fields: str):  # type: ignore[no-untyped-def]
    """Submit a form from ``/account`` (or ``form_page``) the way the browser would, CSRF token included."""
    page = browser.get(fields.pop("form_page", "/account"))
    assert page.status_code == 200, page.text
    return browser.post(path, data={"csrf_token": hidden_fields(page.text)["csrf_token"], **fields})


def sessions_on_page(browser: TestClient) -> list[tuple[str, bool, str]]:
    """(session id, marked as this one, text) of each row of the sessions list."""
    page = browser.get("/account")
    assert page.status_code == 200, page.text
    return [
        (sid, "data-current" in attributes, html.unescape(re.sub(r"<[^>]+>", " ", body)))
        for sid, attributes, body in _SESSION.findall(page.text)
    ]


def current_session_id(browser: TestClient) -> str:
    (sid,) = [sid for sid, current, _ in sessions_on_page(browser) if current]
    return sid


def signed_in(browser: TestClient) -> bool:
    response = browser.get("/account")
    if response.status_code == 303:
        assert response.headers["location"] == "/login"
        return False
    assert response.status_code == 200, response.text
    return True


def stored_user(ctx, user_id: str) -> User:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        user = db.get(User, user_id)
        db.expunge(user)
        return user


def events(ctx, user_id: str, event: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        query = select(AuditEvent).where(AuditEvent.user_id == user_id, AuditEvent.event == event)
        found = list(db.scalars(query.order_by(AuditEvent.id)))
        db.expunge_all()
        return found


def sms_texts(caplog: pytest.LogCaptureFixture, phone: str) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.name == "idp.messages"]
    return [text for text in messages if text.startswith(f"sms to {phone}\n")]


def sms_code(ctx, caplog: pytest.LogCaptureFixture, phone: str, after: int = 0) -> str:  # type: ignore[no-untyped-def]
    """The code in the newest SMS to ``phone``, once more than ``after`` have gone to it; the app's
    own worker may have sent it already."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        deliver_due(ctx)
        texts = sms_texts(caplog, phone)
        if len(texts) > after:
            return re.search(r"\b(\d{6})\b", texts[-1]).group(1)  # type: ignore[union-attr]
        time.sleep(0.05)
    raise AssertionError(f"no SMS to {phone}")


def emailed(ctx, caplog: pytest.LogCaptureFixture, to: str, subject: str) -> str:  # type: ignore[no-untyped-def]
    """The newest email to ``to`` with ``subject`` as the console backend printed it; the app's own
    worker may have sent it already."""
    heading = f"email to {to}\nSubject: {subject} · idp\n"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        deliver_due(ctx)
        printed = [r.getMessage() for r in caplog.records if r.name == "idp.messages"]
        found = [text for text in printed if text.startswith(heading)]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no email {subject!r} to {to}")


def start_phone(browser: TestClient, phone: str):  # type: ignore[no-untyped-def]
    """Ask for a code to ``phone``, giving the password as adding a number asks."""
    return post_form(browser, "/account/phone", phone=phone, current_password=PASSWORD)


def enter_phone_code(browser: TestClient, code: str):  # type: ignore[no-untyped-def]
    return post_form(browser, "/account/phone/verify", form_page="/account/phone/verify", code=code)


@pytest.fixture
def person(make_user):  # type: ignore[no-untyped-def]
    return make_user(name="Ada Account")


@pytest.fixture
def me(browsers, person) -> TestClient:  # type: ignore[no-untyped-def]
    """A browser signed in as ``person``."""
    opened = browsers(CHROME_LINUX)
    sign_in(opened, person.email)
    return opened


# --- access --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/account"),
        ("POST", "/account/profile"),
        ("POST", "/account/phone"),
        ("GET", "/account/phone/verify"),
        ("POST", "/account/phone/verify"),
        ("POST", "/account/phone/verify/resend"),
        ("POST", "/account/phone/remove"),
        ("POST", "/account/sessions/end-others"),
        ("POST", "/account/sessions/abc/end"),
        ("POST", "/account/password"),
    ],
)
def test_without_a_session_every_account_page_goes_to_login(http, method, path):
    response = http.request(method, path, data={"csrf_token": "x"} if method == "POST" else None)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_account_page_shows_the_profile_and_every_section(me, person):
    page = me.get("/account")
    assert page.status_code == 200
    assert "no-store" in page.headers["cache-control"]
    assert person.email in page.text
    assert re.search(r"data-email-status>verified<", page.text)
    assert 'value="Ada Account"' in page.text
    assert re.search(r'<a href="/account/security">Two-step verification</a>', page.text)
    for name in ("name", "phone", "current_password", "password", "password_confirm"):
        assert re.search(rf'<input[^>]*name="{name}"', page.text), name
    forms = re.findall(r'<form method="post"', page.text)
    assert page.text.count('name="csrf_token"') == len(forms) >= 5


def test_unverified_email_is_shown_as_such(me, ctx, person):
    with ctx.db.begin() as db:
        db.get(User, person.id).email_verified = False
    assert re.search(r"data-email-status>not verified<", me.get("/account").text)


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/account/profile", {"name": "Mallory"}),
        ("/account/phone", {"phone": "+14155550123", "current_password": PASSWORD}),
        (
            "/account/password",
            {"current_password": PASSWORD, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
        ),
    ],
)
def test_a_post_without_csrf_token_is_refused(me, ctx, person, path, fields):
    response = me.post(path, data=fields)
    assert response.status_code == 400
    assert "expired" in alert_text(response)
    user = stored_user(ctx, person.id)
    assert user.name == "Ada Account" and user.phone is None
    assert len(sessions_on_page(me)) == 1
    sign_in(me, person.email, PASSWORD)  # the password did not change


def test_ending_a_session_without_csrf_token_is_refused(browsers, person):
    first, second = browsers(CHROME_LINUX), browsers(FIREFOX_WINDOWS)
    sign_in(first, person.email)
    sign_in(second, person.email)
    for path in (f"/account/sessions/{current_session_id(second)}/end", "/account/sessions/end-others"):
        response = first.post(path, data={"csrf_token": "forged"})
        assert response.status_code == 400
        assert "expired" in alert_text(response)
    assert signed_in(second)


def test_a_phone_code_without_csrf_token_is_refused(me, ctx, person, sms_log):
    phone = random_phone()
    start_phone(me, phone)
    code = sms_code(ctx, sms_log, phone)
    for path in ("/account/phone/verify", "/account/phone/verify/resend"):
        response = me.post(path, data={"code": code})
        assert response.status_code == 400
        assert "expired" in alert_text(response)
        assert re.search(r'<input[^>]*name="code"', response.text)
    assert stored_user(ctx, person.id).phone is None


# --- name ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Ada\x1b[31m", "Ada\nLovelace", "Ada \u202eecalevol", "Ada\u2066x"])
def test_a_name_with_control_or_direction_characters_is_refused(me, ctx, person, name):
    """A name goes into pages, ID tokens and logs, where these would recolour, split or reorder
    what follows it."""
    before = stored_user(ctx, person.id).name
    response = post_form(me, "/account/profile", name=name)
    assert response.status_code == 400
    assert "control characters" in alert_text(response)
    assert stored_user(ctx, person.id).name == before


def test_names_in_any_script_and_with_emoji_are_kept(me, ctx, person):
    name = "مریم میرزاخانی 👩\u200d🔬"
    assert post_form(me, "/account/profile", name=name).status_code == 303
    assert stored_user(ctx, person.id).name == name


def test_name_can_be_changed_and_removed(me, ctx, person):
    response = post_form(me, "/account/profile", name="  Ada Lovelace ")
    assert response.status_code == 303
    assert response.headers["location"] == "/account?done=profile"
    page = me.get(response.headers["location"])
    assert notice_text(page) == "Your profile is saved."
    assert 'value="Ada Lovelace"' in page.text
    assert stored_user(ctx, person.id).name == "Ada Lovelace"
    assert events(ctx, person.id, "profile_updated")[-1].detail == {"fields": ["name"]}
    assert post_form(me, "/account/profile", name="").status_code == 303
    assert stored_user(ctx, person.id).name is None


def test_too_long_a_name_is_refused(me, ctx, person):
    response = post_form(me, "/account/profile", name="x" * 201)
    assert response.status_code == 400
    assert "200 characters" in alert_text(response)
    assert stored_user(ctx, person.id).name == "Ada Account"


def _holding_username(ctx, make_user, username: str) -> None:  # type: ignore[no-untyped-def]
    """Another person, whose username is ``username``."""
    other = make_user()
    with ctx.db.begin() as db:
        db.get(User, other.id).preferred_username = username


def test_the_profile_form_changes_names_username_language_and_time_zone(me, ctx, person):
    page = me.get("/account")
    for field in ("given_name", "family_name", "preferred_username", "zoneinfo"):
        assert re.search(rf'<input[^>]*name="{field}"', page.text), field
    assert re.search(r'<select[^>]*name="locale"', page.text)
    assert '<option value="Asia/Tehran">' in page.text
    username = f"ada-{secrets.token_hex(4)}"
    fields = {"given_name": " Ada ", "family_name": "Lovelace", "preferred_username": username}
    response = post_form(me, "/account/profile", name="Ada Account", locale="fa", zoneinfo="Asia/Tehran", **fields)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/account?done=profile"
    user = stored_user(ctx, person.id)
    assert (user.given_name, user.family_name, user.preferred_username) == ("Ada", "Lovelace", username)
    assert (user.locale, user.zoneinfo, user.name) == ("fa", "Asia/Tehran", "Ada Account")
    changed = ["given_name", "family_name", "preferred_username", "locale", "zoneinfo"]
    assert events(ctx, person.id, "profile_updated")[-1].detail == {"fields": changed}
    shown = me.get("/account").text
    assert f'value="{username}"' in shown and 'value="Asia/Tehran"' in shown
    assert re.search(r'<option value="fa"[^>]* selected>', shown)

    other_browser = TestClient(me.app, base_url=TEST_ISSUER, follow_redirects=False)
    sign_in(other_browser, username)

    cleared = post_form(me, "/account/profile", given_name="", family_name="", preferred_username="", zoneinfo="")
    assert cleared.status_code == 303
    user = stored_user(ctx, person.id)
    assert (user.given_name, user.family_name, user.preferred_username, user.zoneinfo) == (None,) * 4
    assert user.locale == "fa", "a language left unchosen keeps the one saved"


def test_saving_the_profile_unchanged_writes_no_audit_event(me, ctx, person):
    assert post_form(me, "/account/profile", name="Ada Account", locale="").status_code == 303
    assert events(ctx, person.id, "profile_updated") == []


def test_a_username_another_person_has_is_refused(me, ctx, person, make_user):
    taken = f"taken-{secrets.token_hex(4)}"
    _holding_username(ctx, make_user, taken)
    response = post_form(me, "/account/profile", preferred_username=taken, given_name="Ada")
    assert response.status_code == 409
    assert alert_text(response) == "That username is taken. Choose another one."
    assert f'value="{taken}"' in response.text, "what was typed is shown again"
    user = stored_user(ctx, person.id)
    assert user.preferred_username is None and user.given_name is None, "nothing is saved"
    assert events(ctx, person.id, "profile_updated") == []


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"zoneinfo": "Mars/Olympus_Mons"}, "That is not a time zone."),
        ({"zoneinfo": "../../etc/passwd"}, "That is not a time zone."),
        ({"preferred_username": "ada\nlovelace"}, "line breaks or control characters"),
        ({"preferred_username": "x" * 151}, "at most 150 characters"),
        ({"given_name": "x" * 201}, "at most 200 characters"),
        ({"family_name": "Love\u202elace"}, "control characters"),
        ({"locale": "fa_IR"}, "A language is a tag of at most 16 characters, like en, fa or fa-IR."),
        ({"locale": "en\nfa"}, "A language is a tag of at most 16 characters, like en, fa or fa-IR."),
    ],
)
def test_a_bad_profile_value_is_refused_with_its_reason(me, ctx, person, fields, says):
    response = post_form(me, "/account/profile", **fields)
    assert response.status_code == 400
    assert says in alert_text(response)
    user = stored_user(ctx, person.id)
    assert (user.zoneinfo, user.preferred_username, user.given_name, user.family_name) == (None,) * 4


def test_the_profile_form_sets_and_removes_the_picture_and_the_postal_address(me, ctx, person):
    page = me.get("/account")
    for field in ("picture", "locality", "region", "postal_code", "country"):
        assert re.search(rf'<input[^>]*name="{field}"', page.text), field
    assert re.search(r'<textarea[^>]*name="street_address"', page.text)
    address = {"street_address": "1 Main St\r\nFlat 2", "locality": " Berlin ", "postal_code": "10115", "country": "DE"}
    response = post_form(me, "/account/profile", picture="https://pictures.example/ada.png", region="", **address)
    assert response.status_code == 303, response.text
    user = stored_user(ctx, person.id)
    assert user.picture == "https://pictures.example/ada.png"
    assert user.address == {
        "formatted": "1 Main St\nFlat 2\n10115 Berlin\nDE",
        "street_address": "1 Main St\nFlat 2",
        "locality": "Berlin",
        "postal_code": "10115",
        "country": "DE",
    }
    assert events(ctx, person.id, "profile_updated")[-1].detail == {"fields": ["picture", "address"]}
    shown = me.get("/account").text
    assert 'value="https://pictures.example/ada.png"' in shown and 'value="Berlin"' in shown

    cleared = post_form(
        me, "/account/profile", picture="", street_address="", locality="", region="", postal_code="", country=""
    )
    assert cleared.status_code == 303
    user = stored_user(ctx, person.id)
    assert (user.picture, user.address) == (None, None)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"picture": "http://pictures.example/ada.png"}, "must start with https://"),
        ({"picture": "javascript:alert(1)"}, "Enter the web address of a picture"),
        ({"picture": "https://user:secret@pictures.example/a.png"}, "Enter the web address of a picture"),
        ({"picture": "https://pictures.example:port/a.png"}, "Enter the web address of a picture"),
        ({"picture": "https://pictures.example/" + "a" * 2000}, "at most 2000 characters"),
        ({"postal_code": "1" * 21}, "at most 20 characters"),
        ({"locality": "Ber\nlin"}, "control characters"),
        ({"country": "DE\u202e"}, "control characters"),
    ],
)
def test_a_bad_picture_or_address_is_refused_with_its_reason(me, ctx, person, fields, says):
    response = post_form(me, "/account/profile", **fields)
    assert response.status_code == 400
    assert says in alert_text(response)
    user = stored_user(ctx, person.id)
    assert (user.picture, user.address) == (None, None)


# --- phone ---------------------------------------------------------------------------------------


def test_a_phone_number_is_stored_once_its_code_comes_back(me, ctx, person, sms_log):
    phone = random_phone()
    response = start_phone(me, phone)
    assert response.status_code == 303
    assert response.headers["location"] == "/account/phone/verify"
    assert stored_user(ctx, person.id).phone is None, "not before the code"
    page = me.get("/account/phone/verify")
    assert page.status_code == 200
    assert phone in page.text
    assert re.search(r'<input[^>]*name="code"', page.text)
    code = sms_code(ctx, sms_log, phone)
    response = enter_phone_code(me, code)
    assert response.status_code == 303
    assert response.headers["location"] == "/account?done=phone"
    user = stored_user(ctx, person.id)
    assert (user.phone, user.phone_verified) == (phone, True)
    page = me.get("/account?done=phone")
    assert notice_text(page) == "Your phone number is verified."
    assert re.search(r"data-phone-status>verified<", page.text)
    sent, verified = events(ctx, person.id, "code_sent")[-1], events(ctx, person.id, "phone_verified")[-1]
    assert sent.detail["purpose"] == "verify_phone" and verified.outcome == "success"
    assert phone not in str(sent.detail) + str(verified.detail) and code not in str(verified.detail)
    assert me.get("/account/phone/verify").headers["location"] == "/account", "nothing left to verify"


def test_the_code_is_spent_after_three_wrong_tries(me, ctx, person, sms_log):
    phone = random_phone()
    start_phone(me, phone)
    code = sms_code(ctx, sms_log, phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(3):
        response = enter_phone_code(me, wrong)
        assert response.status_code == 400
        assert "not right" in alert_text(response)
    response = enter_phone_code(me, code)
    assert response.status_code == 400
    assert "not right" in alert_text(response)
    assert stored_user(ctx, person.id).phone is None
    failures = [e for e in events(ctx, person.id, "phone_verified") if e.outcome == "failure"]
    assert len(failures) == 4 and failures[0].detail["reason"] == "wrong_code"


def test_a_new_code_replaces_the_old_one(me, ctx, person, sms_log):
    phone = random_phone()
    start_phone(me, phone)
    first = sms_code(ctx, sms_log, phone)
    sms_log.clear()
    response = post_form(me, "/account/phone/verify/resend", form_page="/account/phone/verify")
    assert response.status_code == 200
    assert notice_text(response) == "We sent you a new code."
    second = sms_code(ctx, sms_log, phone)
    if first != second:
        assert enter_phone_code(me, first).status_code == 400
    assert enter_phone_code(me, second).status_code == 303
    assert stored_user(ctx, person.id).phone == phone


def test_too_many_codes_show_a_wait(me, ctx, person, sms_log):
    phone = random_phone()
    assert start_phone(me, phone).status_code == 303
    for _ in range(2):
        response = post_form(me, "/account/phone/verify/resend", form_page="/account/phone/verify")
        assert response.status_code == 200
    response = post_form(me, "/account/phone/verify/resend", form_page="/account/phone/verify")
    assert response.status_code == 429
    assert re.search(r"in \d+ seconds", alert_text(response))
    assert re.search(r"<button[^>]*disabled[^>]*>Send a new code", response.text)
    response = start_phone(me, phone)
    assert response.status_code == 429
    assert re.search(r"in \d+ seconds", alert_text(response))
    assert phone in response.text, "the number typed stays in the field"


@pytest.mark.parametrize("typed", ["12345", "not a number", "+98912"])
def test_an_invalid_phone_number_gets_a_clear_message(me, ctx, person, typed):
    response = start_phone(me, typed)
    assert response.status_code == 400
    message = alert_text(response)
    assert "phone number" in message or "country code" in message
    assert stored_user(ctx, person.id).phone is None


def test_a_national_number_needs_the_default_region(me, base_environ, browsers, person, ctx, sms_log):
    digits = f"{secrets.randbelow(10_000_000):07d}"
    national = f"0912{digits}"
    response = start_phone(me, national)
    assert response.status_code == 400, "no IDP_PHONE_DEFAULT_REGION: a national number is not enough"
    iran = create_app(make_settings(base_environ, IDP_PHONE_DEFAULT_REGION="IR"))
    try:
        other = browsers(CHROME_LINUX, iran)
        sign_in(other, person.email)
        assert start_phone(other, national).status_code == 303
        code = sms_code(iran.state.ctx, sms_log, f"+98912{digits}")
        assert enter_phone_code(other, code).status_code == 303
    finally:
        iran.state.ctx.close()
    assert stored_user(ctx, person.id).phone == f"+98912{digits}"


def test_a_number_another_account_verified_is_refused(me, make_user, ctx, person, sms_log):
    taken = random_phone()
    holder = make_user(phone=taken, verified=True)
    free = random_phone()
    asked_taken, asked_free = start_phone(me, taken), start_phone(me, free)
    assert (asked_taken.status_code, asked_taken.headers["location"]) == (
        asked_free.status_code,
        asked_free.headers["location"],
    ), "asking says nothing about who holds the number"
    sms_code(ctx, sms_log, taken)
    start_phone(me, taken)
    response = enter_phone_code(me, sms_code(ctx, sms_log, taken, after=1))
    assert response.status_code == 400
    assert alert_text(response) == "This phone number cannot be added to your account."
    assert stored_user(ctx, person.id).phone is None
    assert stored_user(ctx, holder.id).phone == taken
    assert events(ctx, person.id, "phone_verified")[-1].outcome == "failure"


def test_an_unverified_number_on_another_account_gives_way(me, make_user, ctx, person, sms_log):
    phone = random_phone()
    squatter = make_user(phone=phone, verified=False)
    start_phone(me, phone)
    assert enter_phone_code(me, sms_code(ctx, sms_log, phone)).status_code == 303
    assert stored_user(ctx, person.id).phone == phone
    assert stored_user(ctx, squatter.id).phone is None


def test_the_own_verified_number_is_not_verified_again(browsers, make_user):
    phone = random_phone()
    user = make_user(phone=phone, verified=True)
    opened = browsers()
    sign_in(opened, user.email)
    response = start_phone(opened, phone)
    assert response.status_code == 400
    assert "already verified" in alert_text(response)


def test_verify_page_without_a_pending_number_goes_back(me):
    assert me.get("/account/phone/verify").headers["location"] == "/account"


def remove_phone(browser: TestClient):  # type: ignore[no-untyped-def]
    return post_form(browser, "/account/phone/remove")


@pytest.fixture
def holder(make_user):  # type: ignore[no-untyped-def]
    """A person with a verified phone number, as ``(user, number)``."""
    phone = random_phone()
    return make_user(phone=phone, verified=True), phone


def test_a_removed_number_no_longer_signs_in(browsers, holder, ctx, mail_log):
    user, phone = holder
    opened = browsers()
    sign_in(opened, phone)
    response = remove_phone(opened)
    assert response.status_code == 303
    assert response.headers["location"] == "/account?done=phone_removed"
    page = opened.get("/account?done=phone_removed")
    assert "no longer signs you in" in notice_text(page)
    assert 'action="/account/phone/remove"' not in page.text
    stored = stored_user(ctx, user.id)
    assert (stored.phone, stored.phone_verified) == (None, False)
    assert events(ctx, user.id, "phone_removed")[-1].detail == {"phone": f"{phone[:6]}***{phone[-4:]}"}
    notice = emailed(ctx, mail_log, user.email, PHONE_REMOVED)
    assert f"{phone[:6]}***{phone[-4:]}" in notice and phone not in notice
    stranger = browsers()
    page = stranger.get("/login")
    refused = stranger.post("/login", data={**hidden_fields(page.text), "username": phone, "password": PASSWORD})
    assert refused.status_code == 400
    assert "not right" in alert_text(refused)
    sign_in(browsers(), user.email)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"mfa_method": "sms"}, "Two-step sign-in sends its codes to this number"),
        ({"email": None}, "Your phone number is how you sign in"),
    ],
)
def test_a_number_still_needed_stays(browsers, holder, ctx, change, says):
    user, phone = holder
    opened = browsers()
    sign_in(opened, user.email)
    with ctx.db.begin() as db:
        stored = db.get(User, user.id)
        for name, value in change.items():
            setattr(stored, name, value)
    response = remove_phone(opened)
    assert response.status_code == 400
    assert says in alert_text(response)
    assert stored_user(ctx, user.id).phone == phone


def test_the_number_of_the_sms_second_factor_cannot_be_swapped_for_another(browsers, holder, ctx, sms_log):
    """Removing it is refused, and so is replacing it: either would move the second factor away
    without the proof that turning it off takes."""
    user, phone = holder
    opened = browsers()
    sign_in(opened, user.email)
    with ctx.db.begin() as db:
        db.get(User, user.id).mfa_method = "sms"
    other = random_phone()
    response = start_phone(opened, other)
    assert response.status_code == 400
    assert "Two-step sign-in sends its codes to your number" in alert_text(response)
    deliver_due(ctx)
    assert not [r for r in sms_log.records if r.getMessage().startswith(f"sms to {other}\n")]
    assert stored_user(ctx, user.id).phone == phone


def test_a_code_sent_before_sms_became_the_second_factor_does_not_swap_its_number(browsers, holder, ctx, sms_log):
    user, phone = holder
    opened = browsers()
    sign_in(opened, user.email)
    other = random_phone()
    assert start_phone(opened, other).status_code == 303
    code = sms_code(ctx, sms_log, other)
    with ctx.db.begin() as db:
        db.get(User, user.id).mfa_method = "sms"
    response = enter_phone_code(opened, code)
    assert response.status_code == 400
    assert "Two-step sign-in sends its codes to your number" in alert_text(response)
    assert stored_user(ctx, user.id).phone == phone


PHONE_REMOVED = "A phone number was removed from your account"


def test_removing_a_number_emails_a_notice_that_holds_no_secret(base_environ, settings, own_database_url):
    """Delivered over SMTP by the app's own worker, as a person's mailbox gets it: the number masked
    as in the audit log, the way back, and nothing that signs anyone in."""
    upgrade(own_database_url)
    sink, controller = smtp_sink()
    phone = random_phone()
    try:
        smtp = {"IDP_EMAIL_BACKEND": "smtp", "IDP_SMTP_HOST": "127.0.0.1", "IDP_SMTP_PORT": str(controller.port)}
        with running_app(base_environ | {"IDP_DATABASE_URL": own_database_url}, **smtp) as web:
            with ctx_of(web).db.begin() as db:
                create_user(db, email="owner@example.com", password=PASSWORD, phone=phone, verified=True)
            sign_in(web, "owner@example.com")
            cookie = web.cookies["idp_session"]
            assert remove_phone(web).status_code == 303
            notice = sink.wait_for("owner@example.com", PHONE_REMOVED)
    finally:
        controller.stop()
    text, page = text_of(notice), notice.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for body in (text, page):
        assert f"{phone[:6]}***{phone[-4:]}" in body
        assert f"{TEST_ISSUER}/password/forgot" in body
        for secret in (phone, PASSWORD, cookie, "token="):
            assert secret not in body
    assert not re.search(r"\b\d{6}\b", text), "no code"


def test_removing_without_a_number_is_refused(me, ctx, person):
    assert 'action="/account/phone/remove"' not in me.get("/account").text
    response = remove_phone(me)
    assert response.status_code == 400
    assert alert_text(response) == "There is no phone number on your account."
    assert events(ctx, person.id, "phone_removed") == []


def test_removing_a_number_without_csrf_token_is_refused(browsers, holder, ctx):
    user, phone = holder
    opened = browsers()
    sign_in(opened, user.email)
    response = opened.post("/account/phone/remove", data={})
    assert response.status_code == 400
    assert "expired" in alert_text(response)
    assert stored_user(ctx, user.id).phone == phone


# --- sessions ------------------------------------------------------------------------------------


def test_sessions_list_shows_each_device_and_marks_this_one(browsers, person, ctx):
    chrome, firefox = browsers(CHROME_LINUX), browsers(FIREFOX_WINDOWS)
    sign_in(chrome, person.email)
    sign_in(firefox, person.email)
    rows = sessions_on_page(chrome)
    assert len(rows) == 2
    (this,) = [row for row in rows if row[1]]
    (other,) = [row for row in rows if not row[1]]
    assert rows[0] == this, "this session comes first"
    assert "Chrome on Linux" in this[2] and "This session" in this[2]
    assert "Firefox on Windows" in other[2] and "This session" not in other[2]
    with ctx.db() as db:
        stored = db.get(BrowserSession, other[0])
        assert stored.user_id == person.id
        assert f"IP {stored.ip}" in other[2]
    assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d UTC", this[2])
    assert re.search(r"last seen \d{4}-\d\d-\d\d \d\d:\d\d UTC", this[2])
    assert current_session_id(firefox) == other[0]


def test_sessions_of_other_people_are_not_listed(browsers, person, make_user):
    stranger = make_user()
    mine, theirs = browsers(), browsers()
    sign_in(mine, person.email)
    sign_in(theirs, stranger.email)
    assert [sid for sid, _, _ in sessions_on_page(mine)] == [current_session_id(mine)]


def test_ending_another_session_signs_that_browser_out(browsers, person, ctx):
    here, there = browsers(CHROME_LINUX), browsers(FIREFOX_WINDOWS)
    sign_in(here, person.email)
    sign_in(there, person.email)
    other = current_session_id(there)
    response = post_form(here, f"/account/sessions/{other}/end")
    assert response.status_code == 303
    assert response.headers["location"] == "/account?done=session"
    assert notice_text(here.get("/account?done=session")) == "The session has ended."
    assert not signed_in(there)
    assert signed_in(here)
    assert events(ctx, person.id, "session_ended")[-1].detail == {"session_id": other, "current": False}
    assert post_form(here, f"/account/sessions/{other}/end").status_code == 404, "an ended session is gone"


def test_another_persons_session_cannot_be_ended(browsers, person, make_user, ctx):
    stranger = make_user()
    mine, theirs = browsers(), browsers()
    sign_in(mine, person.email)
    sign_in(theirs, stranger.email)
    response = post_form(mine, f"/account/sessions/{current_session_id(theirs)}/end")
    assert response.status_code == 404
    assert signed_in(theirs)
    assert events(ctx, person.id, "session_ended") == []
    assert post_form(mine, "/account/sessions/no-such-session/end").status_code == 404


def test_ending_this_session_signs_out(me, person):
    response = post_form(me, f"/account/sessions/{current_session_id(me)}/end")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert any(c.startswith("idp_session=") and "Max-Age=0" in c for c in response.headers.get_list("set-cookie"))
    assert not signed_in(me)


def test_end_all_others_keeps_this_session_and_kills_their_refresh_tokens(browsers, person, make_client, ctx):
    client = make_client(first_party=True)
    here, there, elsewhere = browsers(CHROME_LINUX), browsers(FIREFOX_WINDOWS), browsers(FIREFOX_WINDOWS)
    sign_in(here, person.email)
    tokens = tokens_for(there, client, person)
    sign_in(elsewhere, person.email)
    here_tokens = tokens_for(here, client, person)
    assert "refresh_token" in tokens and "refresh_token" in here_tokens
    response = post_form(here, "/account/sessions/end-others")
    assert response.status_code == 303
    assert response.headers["location"] == "/account?done=others"
    assert signed_in(here)
    assert not signed_in(there) and not signed_in(elsewhere)
    refused = here.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=client.auth
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    kept = here.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": here_tokens["refresh_token"]}, auth=client.auth
    )
    assert kept.status_code == 200, "this session's refresh token lives on"
    ended = events(ctx, person.id, "session_ended")
    assert len(ended) == 2 and all(e.detail["current"] is False for e in ended)
    assert [sid for sid, _, _ in sessions_on_page(here)] == [current_session_id(here)]


# --- password ------------------------------------------------------------------------------------


def change(browser: TestClient, current: str, new: str, confirm: str | None = None):  # type: ignore[no-untyped-def]
    return post_form(
        browser, "/account/password", current_password=current, password=new, password_confirm=confirm or new
    )


def test_changing_the_password_ends_the_other_sessions(browsers, person, ctx):
    here, there = browsers(CHROME_LINUX), browsers(FIREFOX_WINDOWS)
    sign_in(here, person.email)
    sign_in(there, person.email)
    response = change(here, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/account?done=password"
    assert "password is changed" in notice_text(here.get("/account?done=password"))
    assert signed_in(here)
    assert not signed_in(there)
    sign_in(there, person.email, NEW_PASSWORD)
    assert events(ctx, person.id, "password_changed")[-1].outcome == "success"


def test_a_wrong_current_password_changes_nothing(me, person, ctx):
    response = change(me, "not the password", NEW_PASSWORD)
    assert response.status_code == 400
    assert alert_text(response) == "Your current password is not right."
    assert events(ctx, person.id, "password_changed")[-1].outcome == "failure"
    sign_in(me, person.email, PASSWORD)


def test_a_locked_account_takes_no_current_password(me, person, ctx):
    """Guesses here count toward the lockout; once it locks, a borrowed session can guess no more:
    even the right password is refused until the lock ends."""
    for _ in range(ctx.settings.lockout_attempts):
        assert change(me, "not the password", NEW_PASSWORD).status_code == 400
    assert stored_user(ctx, person.id).locked_until is not None
    response = change(me, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 400
    assert "locked" in alert_text(response)
    assert events(ctx, person.id, "password_changed")[-1].detail == {"reason": "account_locked"}
    assert verify_password(stored_user(ctx, person.id).password_hash, PASSWORD)


def test_new_passwords_that_differ_are_refused(me, person):
    response = change(me, PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "!")
    assert response.status_code == 400
    assert "not the same" in alert_text(response)
    sign_in(me, person.email, PASSWORD)


@pytest.mark.parametrize(("new", "says"), [("short", "at least"), ("password123", "too common")])
def test_the_password_policy_applies(me, person, new, says):
    response = change(me, PASSWORD, new)
    assert response.status_code == 400
    assert says in alert_text(response)
    sign_in(me, person.email, PASSWORD)


def test_a_passwordless_account_is_offered_a_code_to_set_one(browsers, make_user, ctx):
    user = make_user()
    opened = browsers()
    sign_in(opened, user.email)
    with ctx.db.begin() as db:
        db.get(User, user.id).password_hash = None
    page = opened.get("/account")
    assert 'name="current_password"' not in page.text
    assert re.search(r'<form method="post" action="/account/password/set/code">', page.text)


# --- in a real browser ---------------------------------------------------------------------------


def test_account_page_in_chromium(browser, live_server, make_user):
    """Sign in twice, end the other browser's session from the list, then change the password."""
    user = make_user(name="Pat Chromium")
    contexts = [browser.new_context(), browser.new_context()]
    console: list[str] = []
    try:
        here, there = (context.new_page() for context in contexts)
        for page in (here, there):
            page.set_default_timeout(15_000)
            page.on("console", lambda message: console.append(message.text))
            page.goto(live_server.url + "/login")
            page.fill("input[name=username]", user.email)
            page.fill("input[name=password]", PASSWORD)
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert urlsplit(page.url).path == "/account"
        here.reload()
        rows = here.locator("li[data-session]")
        assert rows.count() == 2
        this = here.locator("li[data-current]")
        assert "This session" in this.inner_text() and " on Linux" in this.locator(".device").inner_text()
        with here.expect_navigation():
            here.locator("li[data-session]:not([data-current]) button").click()
        assert here.locator('[role="status"]').inner_text() == "The session has ended."
        assert rows.count() == 1
        there.reload()
        assert urlsplit(there.url).path == "/login", "the other browser is signed out"

        here.fill("#current_password", PASSWORD)
        here.fill("input[name=password]", NEW_PASSWORD)
        here.fill("input[name=password_confirm]", NEW_PASSWORD)
        with here.expect_navigation():
            here.click("button:has-text('Change password')")
        assert "password is changed" in here.locator('[role="status"]').inner_text()
        there.fill("input[name=username]", user.email)
        there.fill("input[name=password]", NEW_PASSWORD)
        with there.expect_navigation():
            there.click("button[type=submit]")
        assert urlsplit(there.url).path == "/account"
        assert not [text for text in console if "Content Security Policy" in text]
    finally:
        for context in contexts:
            context.close()
