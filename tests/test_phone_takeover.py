"""Taking an account over by adding a phone number with a signed-in session alone.

Whoever holds a session (a stolen cookie, a shared computer, a first-party access token) must not
be able to add a number that signs in by SMS code: adding one asks for the current password, the
owner's mailbox is told, and a password reset or "sign out everywhere" takes off a number added
since the person last showed who they are, and says so.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

from sqlalchemy import select

from idp.storage import OneTimeCode

from .conftest import CHROME_LINUX, PASSWORD
from .flows import ask_for_code, emailed_code, enter_code, hidden_fields
from .test_account import (
    emailed,
    enter_phone_code,
    notice_text,
    post_form,
    random_phone,
    sign_in,
    sms_code,
    sms_log,  # noqa: F401 - a fixture
    stored_user,
)
from .test_account_api import (  # noqa: F401 - fixtures
    assert_problem,
    bearer,
    client,
    documented,
    person,
    token,
    tokens,
)
from .test_account_email import age_sessions, drop_password

NEW_PASSWORD = "a quite different passphrase 42"
PHONE_ADDED = "A phone number was added to your account"
RESET_LINK = re.compile(r"(\S+/password/reset\?token=[A-Za-z0-9_\-%]+)")


def masked(phone: str) -> str:
    return f"{phone[:6]}***{phone[-4:]}"


def codes_sent_to(ctx, phone: str) -> int:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        return len(list(db.scalars(select(OneTimeCode.id).where(OneTimeCode.identifier == phone))))


def add_phone(browser, ctx, caplog, phone: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    """Add and verify ``phone`` on ``/account`` as its owner does, password given."""
    response = post_form(browser, "/account/phone", phone=phone, current_password=password)
    assert response.headers.get("location") == "/account/phone/verify", response.text
    response = enter_phone_code(browser, sms_code(ctx, caplog, phone))
    assert response.headers.get("location") == "/account?done=phone", response.text


def signs_in_by_sms_as(browser, ctx, caplog, phone: str, email: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether a sign-in by SMS code to ``phone`` ends up in the account of ``email``."""
    assert ask_for_code(browser, phone).status_code == 303
    response = enter_code(browser, sms_code(ctx, caplog, phone))
    if response.status_code != 303:
        return False
    page = browser.get("/account")
    return page.status_code == 200 and email in page.text


def reset_password(browser, ctx, caplog, email: str) -> str:  # type: ignore[no-untyped-def]
    """Reset the password by the emailed link; the page that says it is done."""
    page = browser.get("/password/forgot")
    browser.post("/password/forgot", data={**hidden_fields(page.text), "email": email})
    link = RESET_LINK.search(emailed(ctx, caplog, email, "Reset your password"))
    assert link, "no reset link"
    parts = urlsplit(link.group(1))
    page = browser.get(f"{parts.path}?{parts.query}")
    response = browser.post(
        "/password/reset",
        data={**hidden_fields(page.text), "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
    )
    assert response.status_code == 200, response.text
    return response.text


def masked_removed_notice(text: str) -> bool:
    return "was taken off your account" in text


def test_a_session_alone_cannot_add_a_phone_on_the_account_page(browsers, ctx, make_user, sms_log):  # noqa: F811
    victim = make_user()
    intruder = browsers(CHROME_LINUX)
    sign_in(intruder, victim.email)
    phone = random_phone()

    for password in ("", "not the password at all"):
        response = post_form(intruder, "/account/phone", phone=phone, current_password=password)
        assert response.status_code == 400, response.text
        assert "current password" in response.text
    assert codes_sent_to(ctx, phone) == 0, "no code goes to the number"
    assert stored_user(ctx, victim.id).phone is None
    assert 'name="current_password"' in intruder.get("/account").text.split('action="/account/phone"')[1]

    add_phone(intruder, ctx, sms_log, phone)
    assert (stored_user(ctx, victim.id).phone, stored_user(ctx, victim.id).phone_verified) == (phone, True)


def test_without_a_password_only_a_fresh_sign_in_adds_a_phone_and_it_goes_with_the_other_sessions(
    browsers,
    ctx,
    make_user,
    sms_log,  # noqa: F811
):
    victim = make_user()
    intruder = browsers(CHROME_LINUX)
    sign_in(intruder, victim.email)
    drop_password(ctx, victim.id)
    assert 'name="current_password"' not in intruder.get("/account").text
    age_sessions(ctx, victim.id)
    phone = random_phone()

    refused = post_form(intruder, "/account/phone", phone=phone)
    assert refused.status_code == 400 and "Sign in again" in refused.text
    assert codes_sent_to(ctx, phone) == 0

    age_sessions(ctx, victim.id, seconds=-10 * 60)
    assert post_form(intruder, "/account/phone", phone=phone).headers["location"] == "/account/phone/verify"
    assert enter_phone_code(intruder, sms_code(ctx, sms_log, phone)).headers["location"] == "/account?done=phone"
    owner = browsers(CHROME_LINUX)
    sign_in_by_email_code(owner, ctx, sms_log, victim.email)
    assert post_form(owner, "/account/sessions/end-others").headers["location"] == "/account?done=others_phone"
    assert stored_user(ctx, victim.id).phone is None, "a code sign-in vouches for no number"


def sign_in_by_email_code(browser, ctx, caplog, email: str) -> None:  # type: ignore[no-untyped-def]
    assert ask_for_code(browser, email).status_code == 303
    assert enter_code(browser, emailed_code(browser, caplog, email)).status_code == 303


def test_a_first_party_token_alone_cannot_add_a_phone(http, ctx, token, sms_log, documented):  # noqa: F811
    phone = random_phone()
    for body in ({"phone": phone}, {"phone": phone, "current_password": "not the password at all"}):
        response = http.post("/api/account/phone", headers=bearer(token), json=body)
        assert_problem(response, 403, "wrong-password")
        documented.check(response, "/api/account/phone", "post")
    assert codes_sent_to(ctx, phone) == 0
    assert http.get("/api/account", headers=bearer(token)).json()["phone"] is None

    response = http.post(
        "/api/account/phone", headers=bearer(token), json={"phone": phone, "current_password": PASSWORD}
    )
    assert response.status_code == 202, response.text
    verified = http.post(
        "/api/account/phone/verify", headers=bearer(token), json={"code": sms_code(ctx, sms_log, phone)}
    )
    assert verified.json()["phone"] == phone and verified.json()["phone_verified"] is True


def test_the_owner_is_emailed_when_a_phone_is_added(browsers, ctx, make_user, sms_log):  # noqa: F811
    victim = make_user()
    browser = browsers(CHROME_LINUX)
    sign_in(browser, victim.email)
    phone = random_phone()
    add_phone(browser, ctx, sms_log, phone)
    message = emailed(ctx, sms_log, victim.email, PHONE_ADDED)
    assert masked(phone) in message and phone not in message
    assert "/password/forgot" in message


def test_after_a_reset_a_phone_added_since_cannot_sign_in(browsers, ctx, make_user, sms_log):  # noqa: F811
    victim = make_user()
    intruder = browsers(CHROME_LINUX)
    sign_in(intruder, victim.email)
    phone = random_phone()
    add_phone(intruder, ctx, sms_log, phone)

    done = reset_password(browsers(), ctx, sms_log, victim.email)

    assert masked(phone) in done and masked_removed_notice(done)
    assert stored_user(ctx, victim.id).phone is None
    notice = emailed(ctx, sms_log, victim.email, "Your password was changed")
    assert masked(phone) in notice and masked_removed_notice(notice)
    assert not signs_in_by_sms_as(intruder, ctx, sms_log, phone, victim.email)


def test_a_phone_confirmed_by_a_later_password_sign_in_stays_after_a_reset(
    browsers,
    ctx,
    make_user,
    sms_log,  # noqa: F811
):
    victim = make_user()
    owner = browsers(CHROME_LINUX)
    sign_in(owner, victim.email)
    phone = random_phone()
    add_phone(owner, ctx, sms_log, phone)
    time.sleep(1.1)  # times are whole seconds: the sign-in must come after the number
    sign_in(browsers(), victim.email)

    done = reset_password(browsers(), ctx, sms_log, victim.email)

    assert not masked_removed_notice(done)
    assert stored_user(ctx, victim.id).phone == phone
    assert not masked_removed_notice(emailed(ctx, sms_log, victim.email, "Your password was changed"))


def test_sign_out_everywhere_takes_off_a_phone_added_since(browsers, ctx, make_user, sms_log):  # noqa: F811
    victim = make_user()
    owner = browsers(CHROME_LINUX)
    sign_in(owner, victim.email)
    intruder = browsers(CHROME_LINUX)
    sign_in(intruder, victim.email)
    phone = random_phone()
    add_phone(intruder, ctx, sms_log, phone)

    response = post_form(owner, "/account/sessions/end-others")
    assert response.status_code == 303, response.text
    page = owner.get(response.headers["location"])
    assert masked_removed_notice(notice_text(page))
    assert stored_user(ctx, victim.id).phone is None
    assert masked(phone) in emailed(ctx, sms_log, victim.email, "A phone number was removed from your account")
    assert not signs_in_by_sms_as(browsers(), ctx, sms_log, phone, victim.email)


def test_sign_out_everywhere_through_the_api_takes_off_a_phone_added_since(
    http,
    ctx,
    token,  # noqa: F811
    browsers,
    person,  # noqa: F811
    sms_log,  # noqa: F811
    documented,  # noqa: F811
):
    intruder = browsers(CHROME_LINUX)
    sign_in(intruder, person.email)
    phone = random_phone()
    add_phone(intruder, ctx, sms_log, phone)

    response = http.post("/api/account/sessions/end-others", headers=bearer(token))
    assert response.status_code == 200, response.text
    documented.check(response, "/api/account/sessions/end-others", "post")
    assert response.json() == {"ended": 1, "phone_removed": phone}
    assert stored_user(ctx, person.id).phone is None
