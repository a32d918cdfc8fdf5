"""Registering someone else's address must not hand the registrant that person's verified address.

Anyone can register any address with a password of their choosing; the link goes to the address's
owner. Opened in a browser other than the one that registered, the link asks for that password
before it verifies anything, so the owner's click alone does not make the stranger's password open
an account with a verified address; a link sent again, whoever asked for it, signs in only the
browser that registered. When the owner first proves the address some other way (a code, a reset)
nothing the stranger set stays, a verified phone included; and a registration nobody proved is
removed by ``idp cleanup`` once its link has expired, so that it no longer holds the address.
Each test drives separate ``TestClient`` browsers over HTTP (and the real ``idp`` command).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.accounts import registration
from idp.security.digests import token_digest
from idp.storage import ActionToken, BrowserSession, RecoveryCode, User

from . import test_registration as shared
from .conftest import PASSWORD, run_idp
from .flows import (
    EMAIL_CODE,
    RegisteredClient,
    ask_for_code,
    assert_signed_in,
    authorize_params,
    enter_code,
    exchange,
    follow_email_change_link,
    hidden_fields,
    path_of,
    pkce_pair,
    query_of,
    submit_consent,
    submit_login,
)
from .services import text_of
from .test_account import enter_phone_code, post_form, random_phone, sign_in, sms_code
from .test_account_email import LINK as CHANGE_LINK
from .test_account_email import ask as ask_email_change
from .test_registration import Site, alert, make_rp, register, resend
from .test_second_factor import enrol_totp

# The fixtures of test_registration: a site on a database of its own, mailing to an SMTP sink.
smtp, sink, make_site, site = shared.smtp, shared.sink, shared.make_site, shared.site

ATTACKER_PASSWORD = "mallory's own passphrase"
WRONG = "That is not the password chosen when this account was registered."
OWNER_PASSWORD = "the owner's passphrase"
VICTIM = "victim@example.com"
RESET_LINK = re.compile(r"(https?://\S+/password/reset\?token=[A-Za-z0-9_\-%]+)")


def password_form(client: TestClient, link: str) -> httpx.Response:
    form = client.get(path_of(link))
    assert form.status_code == 200, form.text
    return form


def give_password(client: TestClient, form: httpx.Response, password: str) -> httpx.Response:
    return client.post("/verify-email", data={**hidden_fields(form.text), "password": password})


def reset_by_email(site: Site, browser: TestClient, email: str, password: str) -> httpx.Response:
    """Ask for a reset link for ``email``, follow the newest one and choose ``password``."""
    page = browser.get("/password/forgot")
    browser.post("/password/forgot", data={**hidden_fields(page.text), "email": email})
    reset_link = [found.group(1) for m in site.mail(email) if (found := RESET_LINK.search(text_of(m)))][-1]
    page = browser.get(path_of(reset_link))
    return browser.post(
        "/password/reset", data={**hidden_fields(page.text), "password": password, "password_confirm": password}
    )


def verified(site: Site, email: str) -> bool:
    user = site.user(email)
    assert user is not None
    return user.email_verified


def link_spent(site: Site, link: str) -> bool:
    with site.ctx.db() as db:
        stored = db.get(ActionToken, token_digest(query_of(link)["token"]))
        assert stored is not None and stored.purpose == "verify_email"
        return stored.used_at is not None


def test_the_registering_browser_still_verifies_at_once(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    response = site.http.get(path_of(link))
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert verified(site, "ann@example.com")


def test_another_browser_is_asked_for_the_password_and_nothing_is_verified(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    form = password_form(site.browser(), link)
    fields = hidden_fields(form.text)
    assert fields["token"] == query_of(link)["token"] and fields["csrf_token"]
    assert 'name="password"' in form.text and 'action="/verify-email"' in form.text
    assert "ignore" in form.text and 'href="/password/forgot"' in form.text
    assert "idp_session" not in form.headers.get("set-cookie", "")
    assert not verified(site, "ann@example.com") and not link_spent(site, link)
    assert site.audit("email_verified") == []


def test_a_wrong_password_verifies_nothing_keeps_the_link_and_counts(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    other = site.browser()
    response = give_password(other, password_form(other, link), "a wrong guess 1234")
    assert response.status_code == 400 and alert(response.text) == WRONG
    assert hidden_fields(response.text)["token"] == query_of(link)["token"]
    assert "a wrong guess 1234" not in response.text
    user = site.user("ann@example.com")
    assert user is not None and not user.email_verified and user.failed_sign_ins == 1
    assert not link_spent(site, link)
    (event,) = site.audit("email_verified")
    assert event.outcome == "failure" and event.detail == {"reason": "wrong_password"}

    response = give_password(other, response, PASSWORD)
    assert response.status_code == 200 and "Your email is verified" in response.text
    assert verified(site, "ann@example.com") and link_spent(site, link)


def test_the_right_password_verifies_without_signing_in_and_spends_the_link(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    other = site.browser()
    response = give_password(other, password_form(other, link), PASSWORD)
    assert response.status_code == 200 and "Your email is verified" in response.text
    assert "idp_session" not in response.headers.get("set-cookie", "")
    assert other.get("/account").status_code == 303
    assert verified(site, "ann@example.com")
    assert site.audit("email_verified")[-1].detail == {"signed_in": False}
    again = other.get(path_of(link))
    assert again.status_code == 400 and "not valid" in alert(again.text)


def test_wrong_passwords_lock_the_account_and_a_locked_one_checks_none(make_site: Callable[..., Site]) -> None:
    site = make_site(IDP_LOCKOUT_ATTEMPTS="3")
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    other = site.browser()
    form = password_form(other, link)
    for _ in range(3):
        form = give_password(other, form, "a wrong guess 1234")
        assert form.status_code == 400
    user = site.user("ann@example.com")
    assert user is not None and user.locked_until is not None
    assert "times in a row" in text_of(site.mail("ann@example.com")[-1]), "the owner is told of the lock"

    response = give_password(other, form, PASSWORD)
    assert response.status_code == 400 and "locked" in alert(response.text)
    assert not verified(site, "ann@example.com") and not link_spent(site, link)
    assert site.audit("email_verified")[-1].detail == {"reason": "account_locked"}


def test_an_account_without_a_password_is_verified_as_before(site: Site) -> None:
    register(site.http, "ann@example.com")
    with site.ctx.db.begin() as db:
        db.execute(update(User).values(password_hash=None))
    (link,) = site.links("ann@example.com")
    response = site.browser().get(path_of(link))
    assert response.status_code == 200 and "Your email is verified" in response.text
    assert verified(site, "ann@example.com")


def test_the_attackers_registration_stays_unverified_until_the_owner_takes_it_back(site: Site) -> None:
    attacker, victim = site.browser(), site.browser()
    assert register(attacker, "victim@example.com", ATTACKER_PASSWORD).status_code == 200
    (link,) = site.links("victim@example.com")

    form = password_form(victim, link)
    refused = give_password(victim, form, PASSWORD)
    assert refused.status_code == 400 and alert(refused.text) == WRONG
    assert not verified(site, "victim@example.com")

    signed_in = submit_login(attacker, "/login", "victim@example.com", ATTACKER_PASSWORD)
    assert signed_in.status_code == 400
    assert alert(signed_in.text).startswith("Verify your email address first")
    assert "idp_session" not in signed_in.headers.get("set-cookie", "")
    assert attacker.get("/account").status_code == 303

    # The page's advice works: a reset by the owner verifies the address and ends the stranger's password.
    done = reset_by_email(site, victim, "victim@example.com", OWNER_PASSWORD)
    assert done.status_code == 200, alert(done.text)
    assert verified(site, "victim@example.com")
    assert submit_login(attacker, "/login", "victim@example.com", ATTACKER_PASSWORD).status_code == 400
    assert attacker.get("/account").status_code == 303


def test_a_post_without_the_form_token_is_refused(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    other = site.browser()
    password_form(other, link)
    response = other.post("/verify-email", data={"token": query_of(link)["token"], "password": PASSWORD})
    assert response.status_code == 400 and alert(response.text) == "This form has expired. Please try again."
    assert not verified(site, "ann@example.com") and not link_spent(site, link)


def test_a_spent_or_expired_link_gets_the_same_answer_on_post(site: Site) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    other = site.browser()
    form = password_form(other, link)
    with site.ctx.db.begin() as db:
        db.execute(update(ActionToken).values(expires_at=ActionToken.created_at - 1))
    response = give_password(other, form, PASSWORD)
    assert response.status_code == 400 and "not valid" in alert(response.text)
    assert not verified(site, "ann@example.com")
    assert site.audit("email_verified")[-1].detail == {"reason": "invalid_link"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": ""},
        {"token": "unknown"},
        {"token": "x" * 5000},
        {"password": "x" * 5000},
        {"password": "p\u00e9\u00e9"},
        {"password": "nul\x00"},
        {"token": "nul\x00"},
        {"csrf_token": "\x00"},
    ],
)
def test_odd_posts_are_never_a_server_error(site: Site, body: dict[str, str]) -> None:
    register(site.http, "ann@example.com")
    (link,) = site.links("ann@example.com")
    other = site.browser()
    fields = {**hidden_fields(password_form(other, link).text), "password": "wrong", **body}
    if not body:
        fields.pop("token")
    response = other.post("/verify-email", data=fields)
    assert response.status_code == 400, response.text
    assert not verified(site, "ann@example.com") and not link_spent(site, link)


@pytest.mark.parametrize("content", [b"token=%FF%FE&password=%FF", b"\xff\xfe=\xff", b"token=" + b"a" * 2_000_000])
def test_a_body_that_is_not_a_form_is_a_400(site: Site, content: bytes) -> None:
    response = site.http.post(
        "/verify-email", content=content, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code in (400, 413), response.text


# --- a link sent again -------------------------------------------------------------------------


def test_a_link_the_owner_asks_for_again_still_asks_for_the_squatters_password(site: Site) -> None:
    """The owner registers their own address in their own browser, gets the same "check your email"
    page as anyone, and asks for the link again there: that link must not sign them in to the
    account whose password the stranger chose."""
    attacker, owner = site.browser(), site.browser()
    assert register(attacker, VICTIM, ATTACKER_PASSWORD).status_code == 200
    assert shared.DONE in register(owner, VICTIM, OWNER_PASSWORD).text
    assert resend(owner, VICTIM).status_code == 200
    link = site.links(VICTIM)[-1]

    opened = owner.get(path_of(link))
    assert opened.status_code == 200 and 'name="password"' in opened.text, opened.headers
    assert "idp_session" not in opened.headers.get("set-cookie", "")
    assert not verified(site, VICTIM) and not link_spent(site, link)
    refused = give_password(owner, opened, OWNER_PASSWORD)
    assert refused.status_code == 400 and alert(refused.text) == WRONG
    assert not verified(site, VICTIM)
    assert owner.get("/account").status_code == 303


def test_a_link_sent_again_signs_in_only_the_browser_that_registered(site: Site) -> None:
    registering, other = site.browser(), site.browser()
    register(registering, "ann@example.com")
    resend(other, "ann@example.com")
    _, link = site.links("ann@example.com")
    assert password_form(other, link).status_code == 200, "another browser is asked for the password"
    response = registering.get(path_of(link))
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert verified(site, "ann@example.com")


# --- when the link signs in -------------------------------------------------------------------


def start_at_the_app(site: Site, **overrides: str) -> tuple[RegisteredClient, str, str]:
    """A relying app's authorization request: the app, the request's id and the PKCE verifier."""
    rp = make_rp(site.ctx)
    verifier, challenge = pkce_pair()
    started = site.http.get("/authorize", params=authorize_params(rp, challenge, **overrides))
    assert started.status_code == 303, started.text
    return rp, query_of(started.headers["location"])["request"], verifier


def test_the_links_sign_in_dates_from_when_the_password_was_typed(site: Site) -> None:
    rp, request_id, verifier = start_at_the_app(site)
    before = int(time.time())
    register(site.http, "ann@example.com", request_id=request_id)
    after = int(time.time())
    (link,) = site.links("ann@example.com")
    time.sleep(1.5)
    response = site.http.get(path_of(link))
    assert response.headers["location"] == f"/consent?request={request_id}"
    callback = query_of(submit_consent(site.http, response.headers["location"]).headers["location"])
    tokens = exchange(site.http, rp, callback["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    claims = jwt.decode(tokens.json()["id_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd"]
    assert before <= claims["auth_time"] <= after, "the password was typed at registration, not now"


def test_an_app_asking_for_a_recent_sign_in_gets_one_after_a_late_link(site: Site) -> None:
    _, request_id, _ = start_at_the_app(site, max_age="1")
    register(site.http, "ann@example.com", request_id=request_id)
    (link,) = site.links("ann@example.com")
    time.sleep(2.1)
    response = site.http.get(path_of(link))
    assert response.status_code == 303
    assert urlsplit(response.headers["location"]).path == "/login", response.headers["location"]
    assert query_of(response.headers["location"])["request"] == request_id
    assert verified(site, "ann@example.com")


# --- the owner's first proof of the address takes everything back -----------------------------


def squat_with_a_phone_and_an_authenticator(site: Site, caplog: pytest.LogCaptureFixture) -> tuple[TestClient, str]:
    """The stranger registers the victim's address, signs in (the site lets unverified addresses
    sign in with their password), proves a phone of their own and turns on an authenticator app;
    the stranger's browser and phone number."""
    attacker = site.browser()
    assert register(attacker, VICTIM, ATTACKER_PASSWORD).status_code == 200
    sign_in(attacker, VICTIM, ATTACKER_PASSWORD)
    phone = random_phone()
    post_form(attacker, "/account/phone", phone=phone, current_password=ATTACKER_PASSWORD)
    enter_phone_code(attacker, sms_code(site.ctx, caplog, phone))
    enrol_totp(attacker)
    squatted = site.user(VICTIM)
    assert squatted is not None and squatted.phone == phone and squatted.phone_verified
    assert squatted.mfa_method == "totp"
    return attacker, phone


def signed_in_account(site: Site, browser: TestClient) -> str | None:
    """The account the browser's live session belongs to."""
    cookie = browser.cookies.get("idp_session")
    if not cookie:
        return None
    with site.ctx.db() as db:
        return db.scalar(
            select(BrowserSession.user_id).where(
                BrowserSession.token_hash == token_digest(cookie), BrowserSession.ended_at.is_(None)
            )
        )


def sign_in_by_text(site: Site, caplog: pytest.LogCaptureFixture, phone: str) -> TestClient:
    browser = site.browser()
    ask_for_code(browser, phone)
    assert_signed_in(enter_code(browser, sms_code(site.ctx, caplog, phone)))
    return browser


def assert_nothing_of_the_squatters_stays(
    site: Site, attacker: TestClient, caplog: pytest.LogCaptureFixture, phone: str
) -> None:
    account = site.user(VICTIM)
    assert account is not None and account.email_verified
    assert account.phone is None and not account.phone_verified, "the stranger's phone is not the owner's"
    assert account.mfa_method is None and account.totp_secret is None
    with site.ctx.db() as db:
        unused = select(RecoveryCode).where(RecoveryCode.user_id == account.id, RecoveryCode.used_at.is_(None))
        assert db.scalars(unused).all() == [], "the stranger's recovery codes are spent"
    assert attacker.get("/account").status_code == 303, "the stranger's session ended"
    comeback = sign_in_by_text(site, caplog, phone)
    assert signed_in_account(site, comeback) not in (None, account.id), "their phone opens another account"


def test_a_code_to_the_address_takes_back_even_a_phone_the_squatter_proved(
    make_site: Callable[..., Site], mail_log: pytest.LogCaptureFixture
) -> None:
    site = make_site(IDP_REQUIRE_VERIFIED_EMAIL="off")
    attacker, phone = squat_with_a_phone_and_an_authenticator(site, mail_log)
    owner = site.browser()
    ask_for_code(owner, VICTIM)
    codes = [found.group(1) for m in site.mail(VICTIM) if (found := EMAIL_CODE.search(text_of(m)))]
    assert_signed_in(enter_code(owner, codes[-1]))
    account = site.user(VICTIM)
    assert account is not None and account.password_hash is None
    assert_nothing_of_the_squatters_stays(site, attacker, mail_log, phone)


def test_a_reset_of_an_unproven_address_takes_back_what_the_squatter_set(
    make_site: Callable[..., Site], mail_log: pytest.LogCaptureFixture
) -> None:
    site = make_site(IDP_REQUIRE_VERIFIED_EMAIL="off")
    attacker, phone = squat_with_a_phone_and_an_authenticator(site, mail_log)
    owner = site.browser()
    done = reset_by_email(site, owner, VICTIM, OWNER_PASSWORD)
    assert done.status_code == 200, alert(done.text)
    sign_in(owner, VICTIM, OWNER_PASSWORD)  # straight to /account: the stranger's authenticator asks nothing
    assert_nothing_of_the_squatters_stays(site, attacker, mail_log, phone)


# --- registrations nobody proved expire ----------------------------------------------------------


def age(site: Site, email: str, seconds: int) -> None:
    """Move the account's registration and its links ``seconds`` into the past."""
    with site.ctx.db.begin() as db:
        user = db.scalar(select(User).where(User.email == email))
        assert user is not None
        user.created_at -= seconds
        user.updated_at -= seconds
        db.execute(
            update(ActionToken)
            .where(ActionToken.user_id == user.id)
            .values(created_at=ActionToken.created_at - seconds, expires_at=ActionToken.expires_at - seconds)
        )


def cleanup(site: Site) -> None:
    result = run_idp(site.environ, "cleanup")
    assert result.returncode == 0, result.stderr


def test_cleanup_frees_a_squatted_address_for_its_owners_email_change(site: Site) -> None:
    owner = site.browser()
    register(owner, "owner@example.com", OWNER_PASSWORD)
    (link,) = site.links("owner@example.com")
    assert owner.get(path_of(link)).headers["location"] == "/account"
    register(site.browser(), VICTIM, ATTACKER_PASSWORD)

    assert ask_email_change(owner, VICTIM, OWNER_PASSWORD).status_code == 303
    assert not any(CHANGE_LINK.search(text_of(m)) for m in site.mail(VICTIM)), "the squat holds the address"

    age(site, VICTIM, registration.LINK_LIFETIME + 60)
    cleanup(site)
    assert site.user(VICTIM) is None
    assert ask_email_change(owner, VICTIM, OWNER_PASSWORD).status_code == 303
    (change_link,) = [found.group(1) for m in site.mail(VICTIM) if (found := CHANGE_LINK.search(text_of(m)))]
    assert follow_email_change_link(owner, path_of(change_link)).status_code == 200
    moved = site.user(VICTIM)
    assert moved is not None and moved.email_verified and site.user("owner@example.com") is None


def test_links_sent_again_do_not_keep_a_squat_alive(site: Site) -> None:
    register(site.browser(), VICTIM, ATTACKER_PASSWORD)
    age(site, VICTIM, registration.LINK_LIFETIME - 3600)
    assert resend(site.browser(), VICTIM).status_code == 200
    _, link = site.links(VICTIM)
    with site.ctx.db() as db:
        squatted = db.scalar(select(User).where(User.email == VICTIM))
        resent = db.get(ActionToken, token_digest(query_of(link)["token"]))
        assert squatted is not None and resent is not None
        assert resent.expires_at == squatted.created_at + registration.LINK_LIFETIME, "it expires with the first"
    age(site, VICTIM, 2 * 3600)
    cleanup(site)
    assert site.user(VICTIM) is None
    assert site.http.get(path_of(link)).status_code == 400


def test_cleanup_keeps_every_account_that_proved_something_or_is_young(
    make_site: Callable[..., Site],
) -> None:
    site = make_site(IDP_REQUIRE_VERIFIED_EMAIL="off")
    register(site.browser(), "squat@example.com")
    verifying = site.browser()
    register(verifying, "verified@example.com")
    (link,) = site.links("verified@example.com")
    assert verifying.get(path_of(link)).status_code == 303
    signing_in = site.browser()
    register(signing_in, "signed-in@example.com")
    sign_in(signing_in, "signed-in@example.com")
    made = run_idp(site.environ, "users", "create", "--email", "made@example.com", "--password", PASSWORD)
    assert made.returncode == 0, made.stderr
    old = ("squat@example.com", "verified@example.com", "signed-in@example.com", "made@example.com")
    for email in old:
        age(site, email, registration.LINK_LIFETIME + 60)
    register(site.browser(), "young@example.com")

    cleanup(site)
    assert site.user("squat@example.com") is None
    for email in ("verified@example.com", "signed-in@example.com", "made@example.com", "young@example.com"):
        assert site.user(email) is not None, email
