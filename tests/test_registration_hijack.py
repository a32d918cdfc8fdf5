"""Registering someone else's address must not hand the registrant that person's verified address.

Anyone can register any address with a password of their choosing; the link goes to the address's
owner. Opened in a browser other than the one that registered, the link asks for that password
before it verifies anything, so the owner's click alone does not make the stranger's password open
an account with a verified address. Each test drives separate ``TestClient`` browsers over HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.storage import ActionToken, User

from . import test_registration as shared
from .conftest import PASSWORD
from .flows import hidden_fields, path_of, query_of, submit_login
from .services import text_of
from .test_registration import Site, alert, register

# The fixtures of test_registration: a site on a database of its own, mailing to an SMTP sink.
smtp, sink, make_site, site = shared.smtp, shared.sink, shared.make_site, shared.site

ATTACKER_PASSWORD = "mallory's own passphrase"
WRONG = "That is not the password chosen when this account was registered."
RESET_LINK = re.compile(r"(https?://\S+/password/reset\?token=[A-Za-z0-9_\-%]+)")


def password_form(client: TestClient, link: str) -> httpx.Response:
    form = client.get(path_of(link))
    assert form.status_code == 200, form.text
    return form


def give_password(client: TestClient, form: httpx.Response, password: str) -> httpx.Response:
    return client.post("/verify-email", data={**hidden_fields(form.text), "password": password})


def verified(site: Site, email: str) -> bool:
    user = site.user(email)
    assert user is not None
    return user.email_verified


def link_spent(site: Site, link: str) -> bool:
    with site.ctx.sessions() as db:
        stored = db.scalar(select(ActionToken).where(ActionToken.purpose == "verify_email"))
        assert stored is not None
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
    with site.ctx.sessions.begin() as db:
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
    page = victim.get("/password/forgot")
    victim.post("/password/forgot", data={**hidden_fields(page.text), "email": "victim@example.com"})
    (reset_link,) = [
        found.group(1) for m in site.mail("victim@example.com") if (found := RESET_LINK.search(text_of(m)))
    ]
    page = victim.get(path_of(reset_link))
    done = victim.post(
        "/password/reset",
        data={
            **hidden_fields(page.text),
            "password": "the owner's passphrase",
            "password_confirm": "the owner's passphrase",
        },
    )
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
    with site.ctx.sessions.begin() as db:
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
