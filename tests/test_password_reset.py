"""Password reset (forgot → emailed link → new password) and the password change service.

HTTP tests drive the in-process app; its email backend is swapped for a recorder, and
``deliver_due`` sends what the pages queued. The browser journey runs a real ``idp serve`` with
the SMTP backend against an aiosmtpd sink, and a relying app holding a refresh token.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import event as sql_events
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp import audit
from idp.accounts import reauthentication, recovery
from idp.accounts.password_policy import PasswordRejected
from idp.accounts.passwords import verify_password
from idp.accounts.users import create_user, disable_user, lock_user
from idp.context import Context
from idp.languages import Language
from idp.messaging import outbox
from idp.messaging.email import Email
from idp.messaging.worker import deliver_due
from idp.oauth.clients import create_client
from idp.security import sealing
from idp.security.digests import token_digest
from idp.sso import find_session
from idp.storage import ActionToken, AuditEvent, BrowserSession, Grant, OutboxMessage, RefreshToken, User

from .conftest import PASSWORD, TEST_ISSUER
from .flows import (
    RegisteredClient,
    alert_text,
    assert_generic_failure,
    assert_signed_in,
    authorize_params,
    fail_times,
    hidden_fields,
    pkce_pair,
    post_login,
    query_of,
    tokens_for,
    unsent_to,
)
from .refusals import refused_saying
from .services import MailingServer, mailing_server

if TYPE_CHECKING:
    from .flows import TestUser

NEW_PASSWORD = "a brand new passphrase 42"
LINK = re.compile(r"(\S+/password/reset\?token=[A-Za-z0-9_\-%]+)")


# --- fixtures and helpers --------------------------------------------------------------------


@dataclass
class Mailbox:
    """Stands in for the app's email backend: every email the worker sends lands here."""

    ctx: Context
    sent: list[Email] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, email: Email) -> None:
        with self.lock:
            self.sent.append(email)

    def to(self, address: str) -> list[Email]:
        with self.lock:
            return [email for email in self.sent if email.to == address]

    def wait_for(self, address: str, subject: str) -> Email:
        """Deliver what is due until an email to ``address`` with ``subject`` has arrived."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            deliver_due(self.ctx)
            if unsent_to(self.ctx, address):
                time.sleep(0.05)
                continue
            found = [email for email in self.to(address) if subject in email.subject]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no email {subject!r} to {address}; got {[e.subject for e in self.to(address)]}")


@pytest.fixture
def mailbox(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Mailbox:
    box = Mailbox(ctx)
    monkeypatch.setitem(ctx.__dict__, "email_backend", box)
    return box


@pytest.fixture
def new_browser(app) -> Iterator[Callable[[], TestClient]]:  # type: ignore[no-untyped-def]
    """Another browser with its own cookies, for the person's other devices."""
    opened: list[TestClient] = []

    def make() -> TestClient:
        client = TestClient(app, base_url=TEST_ISSUER, follow_redirects=False)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def ask_for_link(http: TestClient, email: str) -> httpx.Response:
    page = http.get("/password/forgot")
    assert page.status_code == 200, page.text
    return http.post("/password/forgot", data={**hidden_fields(page.text), "email": email})


def link_for(http: TestClient, mailbox: Mailbox, email: str) -> str:
    """Ask for a reset and return the link of the email that came. Only reset emails are counted: a
    notice queued before (a lockout's, say) may arrive while we wait."""

    def resets() -> list[Email]:
        return [message for message in mailbox.to(email) if message.subject == "Reset your password · idp"]

    already = len(resets())
    assert ask_for_link(http, email).status_code == 200
    deadline = time.monotonic() + 10
    while len(resets()) == already and time.monotonic() < deadline:
        deliver_due(mailbox.ctx)
        time.sleep(0.02)
    assert len(resets()) == already + 1, [message.subject for message in mailbox.to(email)]
    message = resets()[-1]
    found = LINK.search(message.text)
    assert found, message.text
    return found.group(1)


def token_of(link: str) -> str:
    return query_of(link)["token"]


def open_link(http: TestClient, link: str) -> httpx.Response:
    parts = urlsplit(link)
    return http.get(f"{parts.path}?{parts.query}")


def submit_reset(
    http: TestClient, link: str, password: str = NEW_PASSWORD, confirm: str | None = None
) -> httpx.Response:
    page = open_link(http, link)
    assert page.status_code == 200, page.text
    fields = hidden_fields(page.text)
    return http.post(
        "/password/reset",
        data={**fields, "password": password, "password_confirm": password if confirm is None else confirm},
    )


def assert_changed(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert "Password changed" in response.text


def assert_bad_link(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert "not valid" in alert_text(response)
    assert 'name="password"' not in response.text


def stored(ctx: Context, user_id: str) -> User:
    with ctx.db() as db:
        user = db.get_one(User, user_id)
        db.expunge(user)
        return user


def tokens_of(ctx: Context, email: str) -> list[ActionToken]:
    with ctx.db() as db:
        found = list(db.scalars(select(ActionToken).where(ActionToken.email == email)))
        db.expunge_all()
        return found


def queued_to(ctx: Context, address: str) -> list[OutboxMessage]:
    with ctx.db() as db:
        found = list(db.scalars(select(OutboxMessage).where(OutboxMessage.recipient == address)))
        db.expunge_all()
        return found


def events(ctx: Context, event: str, user_id: str | None = None) -> list[AuditEvent]:
    with ctx.db() as db:
        query = select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)
        if user_id is not None:
            query = query.where(AuditEvent.user_id == user_id)
        found = list(db.scalars(query))
        db.expunge_all()
        return found


def live_sessions(ctx: Context, user_id: str) -> list[str]:
    with ctx.db() as db:
        return list(
            db.scalars(
                select(BrowserSession.id)
                .where(BrowserSession.user_id == user_id, BrowserSession.ended_at.is_(None))
                .order_by(BrowserSession.created_at)
            )
        )


def refresh(http: TestClient, client: RegisteredClient, refresh_token: str) -> httpx.Response:
    return http.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}, auth=client.auth)


def session_of(ctx: Context, browser: TestClient) -> str:
    with ctx.db() as db:
        active = find_session(db, browser.cookies.get("idp_session"), idle_timeout=None)
        assert active is not None
        return active.session.id


def signed_in_browser(new_browser: Callable[[], TestClient], user: TestUser) -> TestClient:
    browser = new_browser()
    assert_signed_in(post_login(browser, user.email, PASSWORD))
    return browser


def unknown_email() -> str:
    return f"nobody-{secrets.token_hex(6)}@example.com"


# --- asking for a link -----------------------------------------------------------------------


def test_forgot_page_has_the_contract_field(http):
    page = http.get("/password/forgot")
    assert page.status_code == 200
    assert 'name="email"' in page.text
    assert "csrf_token" in hidden_fields(page.text)
    assert page.headers["cache-control"] == "no-store"


def test_sign_in_page_links_to_forgot(http):
    assert 'href="/password/forgot"' in http.get("/login").text


def test_known_unknown_and_disabled_accounts_get_the_same_answer(http, make_user, ctx, mailbox):
    known, disabled = make_user(), make_user()
    with ctx.db.begin() as db:
        disable_user(db, disabled.id)
    answers = [ask_for_link(http, email) for email in (known.email, unknown_email(), disabled.email)]
    assert {response.status_code for response in answers} == {200}
    assert len({response.text for response in answers}) == 1, "the words must not tell the accounts apart"
    assert "If an account uses that email address" in answers[0].text
    assert len(queued_to(ctx, known.email)) == 1
    assert queued_to(ctx, disabled.email) == [] and tokens_of(ctx, disabled.email) == []


def test_known_and_unknown_accounts_take_similar_time(http, make_user):
    """Each kind's fastest answer: what the request's own work takes, where a median of a few
    still moved by threefold with what else a loaded machine ran meanwhile (the work itself is
    compared exactly below, by ``watch_work``)."""
    known = [make_user().email for _ in range(15)]
    unknown = [unknown_email() for _ in range(15)]
    ask_for_link(http, unknown_email())  # warm up templates and connections
    fields = hidden_fields(http.get("/password/forgot").text)
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for known_email, unknown_address in zip(known, unknown, strict=True):
        for kind, email in (("known", known_email), ("unknown", unknown_address)):
            started = time.perf_counter()
            assert http.post("/password/forgot", data={**fields, "email": email}).status_code == 200
            timings[kind].append(time.perf_counter() - started)
    known_fastest, unknown_fastest = min(timings["known"]), min(timings["unknown"])
    assert known_fastest < 3 * unknown_fastest and unknown_fastest < 3 * known_fastest, timings


@dataclass
class RequestWork:
    """What one request did of a sent link's work: emails rendered, bodies sealed, rows inserted."""

    rendered: list[str] = field(default_factory=list)
    sealed: int = 0
    inserted: list[str] = field(default_factory=list)


@pytest.fixture
def watch_work(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], RequestWork]]:
    """Record the work of the requests made until the next call, through the real code path."""
    work = RequestWork()
    render, seal = outbox.render_email, sealing.Sealer.seal

    def rendering(template: str, context: dict[str, Any], language: Language, theme: Any) -> tuple[str, str, str]:
        work.rendered.append(template)
        return render(template, context, language, theme)

    def sealing_(self: sealing.Sealer, plaintext: str) -> str:
        work.sealed += 1
        return seal(self, plaintext)

    def executing(conn, cursor, statement: str, *args: Any) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO"):
            work.inserted.append(statement.split()[2].strip('"'))

    def taken() -> RequestWork:
        nonlocal work
        done, work = work, RequestWork()
        return done

    monkeypatch.setattr(outbox, "render_email", rendering)
    monkeypatch.setattr(sealing.Sealer, "seal", sealing_)
    sql_events.listen(ctx.engine, "before_cursor_execute", executing)
    try:
        yield taken
    finally:
        sql_events.remove(ctx.engine, "before_cursor_execute", executing)


def test_every_address_costs_a_sent_links_work(http, make_user, ctx, mailbox, watch_work):
    """The time of the answer must not tell known addresses from unknown ones: an unknown, disabled
    or limited address makes, renders, seals and writes the email a known one gets, and only a link
    that may go is kept. This compares the work done, not the time it took."""
    known, disabled, limited = make_user(), make_user(), make_user()
    with ctx.db.begin() as db:
        disable_user(db, disabled.id)
    for _ in range(recovery.LIMIT):
        ask_for_link(http, limited.email)
    addresses = {"known": known.email, "unknown": unknown_email(), "disabled": disabled.email, "limited": limited.email}
    work = {}
    for kind, email in addresses.items():
        fields = hidden_fields(http.get("/password/forgot").text)
        watch_work()
        assert http.post("/password/forgot", data={**fields, "email": email}).status_code == 200
        work[kind] = watch_work()
    assert work["known"].rendered == ["password_reset"] and work["known"].sealed == 1
    assert sorted(work["known"].inserted) == ["action_tokens", "audit_events", "outbox"]
    for kind in ("unknown", "disabled", "limited"):
        assert (work[kind].rendered, work[kind].sealed) == (work["known"].rendered, work["known"].sealed), kind
        assert "outbox" in work[kind].inserted, kind
    assert sorted(work["disabled"].inserted) == sorted(work["limited"].inserted) == sorted(work["known"].inserted)
    assert len(queued_to(ctx, known.email)) == 1
    assert queued_to(ctx, addresses["unknown"]) == [] and queued_to(ctx, disabled.email) == []
    assert len(queued_to(ctx, limited.email)) == recovery.LIMIT
    assert tokens_of(ctx, addresses["unknown"]) == [] and tokens_of(ctx, disabled.email) == []
    assert len(tokens_of(ctx, limited.email)) == recovery.LIMIT


def test_the_email_carries_a_link_valid_one_hour_kept_only_as_a_digest(http, make_user, ctx, mailbox):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    assert link.startswith(f"{TEST_ISSUER}/password/reset?token=")
    token = token_of(link)
    assert len(token) >= 43
    (row,) = tokens_of(ctx, user.email)
    assert row.purpose == "reset_password" and row.user_id == user.id
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {row.token_hash, row.email, row.browser_hash, row.authorization_request_id}
    assert row.expires_at - row.created_at == 3600
    email = mailbox.to(user.email)[-1]
    assert link in email.html and "60 minutes" in email.text


def test_unknown_account_gets_no_token_and_no_email(http, ctx, mailbox):
    email = unknown_email()
    assert ask_for_link(http, email).status_code == 200
    deliver_due(ctx)
    assert tokens_of(ctx, email) == [] and queued_to(ctx, email) == [] and mailbox.to(email) == []


def test_at_most_three_links_per_fifteen_minutes(http, make_user, ctx, mailbox):
    user = make_user()
    answers = [ask_for_link(http, user.email) for _ in range(4)]
    assert {response.status_code for response in answers} == {200}
    assert len({response.text for response in answers}) == 1, "over the limit answers the same"
    assert len(tokens_of(ctx, user.email)) == 3 and len(queued_to(ctx, user.email)) == 3
    reasons = [(e.outcome, (e.detail or {}).get("reason")) for e in events(ctx, "password_reset_requested", user.id)]
    assert reasons == [("success", None)] * 3 + [("failure", "rate_limited")]

    with ctx.db.begin() as db:  # fifteen minutes pass
        db.execute(
            update(ActionToken).where(ActionToken.email == user.email).values(created_at=ActionToken.created_at - 900)
        )
    ask_for_link(http, user.email)
    assert len(tokens_of(ctx, user.email)) == 4 and len(queued_to(ctx, user.email)) == 4


def test_forgot_without_csrf_token_sends_nothing(http, make_user, ctx):
    user = make_user()
    http.get("/password/forgot")
    response = http.post("/password/forgot", data={"email": user.email})
    assert response.status_code == 400
    assert "expired" in alert_text(response)
    assert tokens_of(ctx, user.email) == [] and queued_to(ctx, user.email) == []


def test_forgot_with_something_that_is_not_an_email_says_so(http):
    response = ask_for_link(http, "not an address")
    assert response.status_code == 400
    assert alert_text(response) == "That is not an email address."


def test_audit_events_record_requests_without_secrets(http, make_user, ctx, mailbox):
    user = make_user()
    stranger = unknown_email()
    link = link_for(http, mailbox, user.email)
    ask_for_link(http, stranger)
    assert_changed(submit_reset(http, link))

    (asked,) = events(ctx, "password_reset_requested", user.id)
    assert asked.outcome == "success" and asked.ip and asked.user_agent
    unknown = [e for e in events(ctx, "password_reset_requested") if e.user_id is None][-1]
    assert unknown.detail["recipient"] == "n***@example.com"
    assert unknown.outcome == "failure" and unknown.detail["reason"] == "unknown_account"
    (reset,) = events(ctx, "password_reset", user.id)
    assert reset.outcome == "success"
    for event in (asked, unknown, reset):
        written = repr(event.detail)
        for secret in (token_of(link), NEW_PASSWORD, PASSWORD, user.email, stranger):
            assert secret not in written


# --- the link ------------------------------------------------------------------------------


def test_reset_page_keeps_the_token_out_of_every_url_it_links_to(http, make_user, mailbox):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    token = token_of(link)
    page = open_link(http, link)
    assert page.status_code == 200
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert hidden_fields(page.text)["token"] == token
    assert page.text.count(token) == 1, "only in the hidden field"
    assert '<form method="post" action="/password/reset">' in page.text
    assert {'name="password"', 'name="password_confirm"'} <= set(re.findall(r'name="[a-z_]+"', page.text))


def test_reset_changes_the_password(http, make_user, new_browser, mailbox):
    user = make_user()
    assert_changed(submit_reset(http, link_for(http, mailbox, user.email)))
    other = new_browser()
    assert_generic_failure(post_login(other, user.email, PASSWORD))
    assert_signed_in(post_login(other, user.email, NEW_PASSWORD))


def test_link_works_once(http, make_user, mailbox):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    page = open_link(http, link)
    assert_changed(submit_reset(http, link))
    assert_bad_link(open_link(http, link))
    again = http.post(
        "/password/reset",
        data={
            **hidden_fields(page.text),
            "password": "yet another passphrase 7",
            "password_confirm": "yet another passphrase 7",
        },
    )
    assert_bad_link(again)


def test_a_link_read_by_two_requests_at_once_is_spent_once(http, make_user, ctx, mailbox, monkeypatch):
    """The second of two racing requests found the link live, but the conditional UPDATE refuses it."""
    user = make_user()
    token = token_of(link_for(http, mailbox, user.email))
    with ctx.db() as db:
        seen_live = recovery.find_reset_link(db, token)
        db.expunge_all()
    with ctx.db.begin() as db:
        recovery.reset_password(db, ctx.settings, ctx.secret_key, token, NEW_PASSWORD)
    monkeypatch.setattr(recovery, "find_reset_link", lambda db, token: seen_live)
    with ctx.db() as db, pytest.raises(recovery.ResetLinkInvalid):
        recovery.reset_password(db, ctx.settings, ctx.secret_key, token, "a third passphrase 99")
    assert verify_password(stored(ctx, user.id).password_hash, NEW_PASSWORD)


def test_using_one_link_spends_the_others(http, make_user, mailbox):
    user = make_user()
    first, second = link_for(http, mailbox, user.email), link_for(http, mailbox, user.email)
    assert_changed(submit_reset(http, second))
    assert_bad_link(open_link(http, first))


def test_link_expires_after_an_hour(http, make_user, ctx, mailbox):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    page = open_link(http, link)
    with ctx.db.begin() as db:  # an hour passes
        db.execute(
            update(ActionToken)
            .where(ActionToken.email == user.email)
            .values(created_at=ActionToken.created_at - 3600, expires_at=ActionToken.expires_at - 3600)
        )
    assert_bad_link(open_link(http, link))
    posted = http.post(
        "/password/reset", data={**hidden_fields(page.text), "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    )
    assert_bad_link(posted)
    assert verify_password(stored(ctx, user.id).password_hash, PASSWORD)


@pytest.mark.parametrize("query", ["", "?token=", "?token=made-up-token", "?token=" + "x" * 500])
def test_unknown_token_is_a_clear_400(http, query):
    assert_bad_link(http.get("/password/reset" + query))


def test_link_of_an_address_the_account_no_longer_has_is_refused(http, make_user, ctx, mailbox):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    with ctx.db.begin() as db:
        db.execute(update(User).where(User.id == user.id).values(email=unknown_email()))
    page = open_link(http, link)
    posted = http.post(
        "/password/reset", data={**hidden_fields(page.text), "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    )
    assert_bad_link(posted)


# --- the new password ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "Use at least 8 characters."),
        ("password1", "This password is too common."),
        (PASSWORD, "Choose a password you have not used for your last 5 passwords."),
    ],
)
def test_policy_refusal_shows_inline_and_keeps_the_link_usable(http, make_user, ctx, mailbox, password, message):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    refused = submit_reset(http, link, password)
    assert refused.status_code == 400
    assert alert_text(refused).startswith(message)
    assert hidden_fields(refused.text)["token"] == token_of(link)
    assert verify_password(stored(ctx, user.id).password_hash, PASSWORD)
    assert_changed(submit_reset(http, link))


def test_password_equal_to_the_email_is_refused(http, make_user, mailbox):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    refused = submit_reset(http, link, user.email.upper())
    assert refused.status_code == 400
    assert alert_text(refused) == "Your password cannot be your email address."


def test_mismatched_passwords_are_refused_and_keep_the_link_usable(http, make_user, ctx, mailbox):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    refused = submit_reset(http, link, NEW_PASSWORD, NEW_PASSWORD + "!")
    assert refused.status_code == 400
    assert alert_text(refused) == "The two passwords are not the same."
    assert verify_password(stored(ctx, user.id).password_hash, PASSWORD)
    assert_changed(submit_reset(http, link))


def test_reset_without_csrf_token_changes_nothing(http, make_user, ctx, mailbox):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    posted = http.post(
        "/password/reset", data={"token": token_of(link), "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    )
    assert posted.status_code == 400
    assert "expired" in alert_text(posted)
    assert verify_password(stored(ctx, user.id).password_hash, PASSWORD)
    assert_changed(submit_reset(http, link))


def test_reset_with_another_browsers_csrf_token_changes_nothing(http, make_user, ctx, mailbox, new_browser):
    user = make_user()
    link = link_for(http, mailbox, user.email)
    forged = hidden_fields(open_link(http, link).text)
    attacker = new_browser()
    attacker.get("/password/forgot")
    posted = attacker.post(
        "/password/reset", data={**forged, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    )
    assert posted.status_code == 400
    assert verify_password(stored(ctx, user.id).password_hash, PASSWORD)


# --- what a reset ends -----------------------------------------------------------------------


def test_reset_ends_every_session_and_revokes_every_refresh_token(
    http, make_user, make_client, ctx, mailbox, new_browser
):
    user = make_user()
    client = make_client(scope="openid email offline_access")
    phone, laptop = signed_in_browser(new_browser, user), new_browser()
    tokens = tokens_for(laptop, client, user, scope="openid email offline_access")
    offline = tokens_for(new_browser(), client, user, scope="openid email offline_access")
    with ctx.db.begin() as db:  # a grant that outlived its session
        grant_id = db.get_one(RefreshToken, token_digest(offline["refresh_token"])).grant_id
        db.execute(update(Grant).where(Grant.id == grant_id).values(session_id=None))
    assert len(live_sessions(ctx, user.id)) == 3

    assert_changed(submit_reset(http, link_for(http, mailbox, user.email)))

    assert live_sessions(ctx, user.id) == []
    for browser in (phone, laptop):
        assert browser.get("/account").headers["location"] == "/login"
    for refresh_token in (tokens["refresh_token"], offline["refresh_token"]):
        refused = refresh(http, client, refresh_token)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    (event,) = events(ctx, "password_reset", user.id)
    assert event.detail == {"sessions_ended": 3}


def test_reset_ends_a_lockout(http, make_user, ctx, mailbox, new_browser):
    user = make_user()
    attacker = new_browser()
    fail_times(attacker, user.email, 5)
    assert stored(ctx, user.id).locked_until is not None
    assert_changed(submit_reset(http, link_for(http, mailbox, user.email)))
    after = stored(ctx, user.id)
    assert (after.locked_until, after.failed_sign_ins) == (None, 0)
    assert_signed_in(post_login(new_browser(), user.email, NEW_PASSWORD))


def test_reset_verifies_the_email(http, make_user, ctx, mailbox, new_browser):
    user = make_user(verified=False)
    assert "Verify your email" in alert_text(post_login(new_browser(), user.email, PASSWORD))
    assert_changed(submit_reset(http, link_for(http, mailbox, user.email)))
    assert stored(ctx, user.id).email_verified
    assert_signed_in(post_login(new_browser(), user.email, NEW_PASSWORD))


def test_reset_emails_a_notice(http, make_user, mailbox):
    user = make_user()
    assert_changed(submit_reset(http, link_for(http, mailbox, user.email)))
    notice = mailbox.wait_for(user.email, "Your password was changed")
    assert "/password/forgot" in notice.text and "/password/forgot" in notice.html
    assert NEW_PASSWORD not in notice.text


# --- changing a known password ---------------------------------------------------------------


def change(ctx: Context, user_id: str, current: str, new: str, keep: str | None) -> int:
    with ctx.db() as db:
        audit.set_origin(db, audit.Origin("192.0.2.7", "pytest"))
        user = db.get_one(User, user_id)
        try:
            lock = functools.partial(lock_user, db, user_id)
            return recovery.change_password(db, ctx.settings, ctx.secret_key, user, current, new, keep, lock)
        finally:
            db.commit()


def test_change_refuses_a_wrong_current_password(make_user, ctx):
    user = make_user()
    with pytest.raises(reauthentication.WrongPassword):
        change(ctx, user.id, "not the password", NEW_PASSWORD, None)
    assert verify_password(stored(ctx, user.id).password_hash, PASSWORD)
    (event,) = events(ctx, "password_changed", user.id)
    assert (event.outcome, event.detail, event.ip) == ("failure", {"reason": "wrong_current_password"}, "192.0.2.7")


def test_change_ends_the_other_sessions_and_keeps_this_one(make_user, make_client, ctx, new_browser, mailbox):
    user = make_user()
    client = make_client(scope="openid email offline_access")
    this, other = new_browser(), new_browser()
    mine = tokens_for(this, client, user, scope="openid email offline_access")
    theirs = tokens_for(other, client, user, scope="openid email offline_access")
    keep, ended = session_of(ctx, this), session_of(ctx, other)

    assert change(ctx, user.id, PASSWORD, NEW_PASSWORD, keep) == 1

    assert live_sessions(ctx, user.id) == [keep]
    assert this.get("/account").status_code == 200
    assert other.get("/account").headers["location"] == "/login"
    assert refresh(this, client, mine["refresh_token"]).status_code == 200
    assert refresh(this, client, theirs["refresh_token"]).json()["error"] == "invalid_grant"
    assert_generic_failure(post_login(new_browser(), user.email, PASSWORD))
    assert_signed_in(post_login(new_browser(), user.email, NEW_PASSWORD))
    (event,) = events(ctx, "password_changed", user.id)
    assert (event.outcome, event.detail) == ("success", {"sessions_ended": 1})
    assert mailbox.wait_for(user.email, "Your password was changed")
    assert ended not in live_sessions(ctx, user.id)


def test_change_enforces_the_policy_and_history(make_user, ctx, new_browser):
    user = make_user()
    keep = session_of(ctx, signed_in_browser(new_browser, user))
    signed_in_browser(new_browser, user)
    for refused in (PASSWORD, "password1", "short"):
        with pytest.raises(PasswordRejected):
            change(ctx, user.id, PASSWORD, refused, keep)
    assert len(live_sessions(ctx, user.id)) == 2, "a refused change ends nothing"

    change(ctx, user.id, PASSWORD, NEW_PASSWORD, keep)
    change(ctx, user.id, NEW_PASSWORD, "a third passphrase 99", keep)
    with refused_saying(PasswordRejected, "last 5"):
        change(ctx, user.id, "a third passphrase 99", NEW_PASSWORD, keep)
    assert verify_password(stored(ctx, user.id).password_hash, "a third passphrase 99")


# --- the journey in a browser ----------------------------------------------------------------


class RelyingApp(ThreadingHTTPServer):
    """Answers its callback with a plain page and remembers the URLs it was called with."""

    daemon_threads = True

    def __init__(self) -> None:
        callbacks: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if urlsplit(self.path).path != "/cb":
                    self.send_error(404)
                    return
                callbacks.append(self.path)
                body = b"<!doctype html><title>Relying app</title><p>back at the app</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.callbacks = callbacks
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def smtp_server(base_environ: dict[str, str], own_database_url: str, tmp_path: Path) -> Iterator[MailingServer]:
    """``idp serve`` with its own database, sending email over SMTP to an aiosmtpd sink."""
    with mailing_server(base_environ | {"IDP_DATABASE_URL": own_database_url}, tmp_path / "serve.log") as server:
        yield server


@pytest.fixture
def relying_app() -> Iterator[RelyingApp]:
    server = RelyingApp()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_journey_forgot_link_new_password_ends_the_old_session(browser, smtp_server, relying_app):
    server = smtp_server
    with server.ctx.db.begin() as db:
        user = create_user(db, email=f"journey-{secrets.token_hex(4)}@example.com", password=PASSWORD, verified=True)
        made = create_client(
            db,
            server.ctx.secret_key,
            name="Journey app",
            redirect_uris=[relying_app.origin + "/cb"],
            first_party=True,
            allow_http=True,
        )
        email, client = user.email, RegisteredClient(made.client.id, made.secret, relying_app.origin + "/cb")
    assert email is not None

    # Session A: signed in at the relying app, which holds a refresh token.
    context_a = browser.new_context()
    page_a = context_a.new_page()
    page_a.set_default_timeout(15_000)
    verifier, challenge = pkce_pair()
    page_a.goto(f"{server.live.url}/authorize?{urlencode(authorize_params(client, challenge))}")
    page_a.fill("input[name=username]", email)
    page_a.fill("input[name=password]", PASSWORD)
    page_a.click("button[type=submit]")
    page_a.wait_for_url(relying_app.origin + "/**")
    code = query_of(relying_app.callbacks[-1])["code"]
    tokens = httpx.post(
        server.live.url + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client.redirect_uri,
            "code_verifier": verifier,
        },
        auth=client.auth,
    ).json()
    assert "refresh_token" in tokens
    page_a.goto(server.live.url + "/account")
    assert urlsplit(page_a.url).path == "/account"

    # Another browser: forgot → link from the SMTP sink → new password.
    context_b = browser.new_context()
    page_b = context_b.new_page()
    page_b.set_default_timeout(15_000)
    page_b.goto(server.live.url + "/login")
    page_b.click("text=Forgot your password?")
    page_b.fill("input[name=email]", email)
    page_b.click("button[type=submit]")
    page_b.wait_for_selector("text=Check your email")
    message = server.sink.wait_for(email, "Reset your password")
    link = LINK.search(message.get_body(("plain",)).get_content())
    assert link and link.group(1).startswith(server.live.url + "/password/reset?token=")
    page_b.goto(link.group(1))
    assert page_b.locator("a[href*='token']").count() == 0
    page_b.fill("input[name=password]", NEW_PASSWORD)
    page_b.fill("input[name=password_confirm]", NEW_PASSWORD)
    page_b.click("button[type=submit]")
    page_b.wait_for_selector("text=Password changed")
    assert page_b.url == server.live.url + "/password/reset", "the token is not in the address any more"

    # Session A is gone, and so is the relying app's refresh token.
    page_a.goto(server.live.url + "/account")
    assert urlsplit(page_a.url).path == "/login"
    refused = httpx.post(
        server.live.url + "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=client.auth,
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"

    # The old password fails, the new one works, and the owner was told.
    page_b.click("a[href='/login']")
    page_b.fill("input[name=username]", email)
    page_b.fill("input[name=password]", PASSWORD)
    page_b.click("button[type=submit]")
    assert "not right" in page_b.locator('[role="alert"]').inner_text()
    page_b.fill("input[name=password]", NEW_PASSWORD)
    page_b.click("button[type=submit]")
    page_b.wait_for_url(server.live.url + "/account")
    notice = server.sink.wait_for(email, "Your password was changed")
    assert "/password/forgot" in notice.get_body(("plain",)).get_content()
    context_a.close()
    context_b.close()
