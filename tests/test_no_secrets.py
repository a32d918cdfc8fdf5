"""No secret reaches a log line, an audit event or a queued message.

A real ``idp serve`` (its own SQLite database, email by SMTP to an aiosmtpd sink, so the bodies of
messages are not printed as the console backend prints them by contract) goes through a person's
day: a sign-in by the code flow with PKCE, tokens, a refresh, userinfo, a failed sign-in with
another password, a reset through the emailed link, a sign-in with the new password and one with a
code sent by email, a change of email address (a wrong password first, then the emailed link), and a
newcomer who signs up with a code and sets a first password with the code emailed for it. Then every
line it wrote, every audit event (every column, the JSON detail
too) and every outbox row are searched for each secret used on the way; the credentials must not
be anywhere in the database in the clear either.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from idp.accounts.users import create_user
from idp.oauth.clients import create_client
from idp.storage import AuditEvent, OutboxMessage

from .flows import (
    EMAIL_CODE,
    RegisteredClient,
    ask_for_code,
    enter_code,
    exchange,
    follow_email_change_link,
    hidden_fields,
    pkce_pair,
    post_login,
    query_of,
    sign_in,
)
from .flows import TestUser as Person
from .services import SmtpSink, mailing_server, text_of

RESET_LINK = re.compile(r"\S+/password/reset\?token=[A-Za-z0-9_\-%]+")
CHANGE_LINK = re.compile(r"\S+/account/email/confirm\?token=[A-Za-z0-9_\-%]+")
SET_PASSWORD_CODE = re.compile(r"set a password for your account is (\d{6})")


@dataclass
class Server:
    url: str
    log: Path
    database_url: str
    sink: SmtpSink
    client: RegisteredClient
    person: Person
    request_ids: set[str] = field(default_factory=set)

    def browser(self) -> httpx.Client:
        """A cookie-keeping client that notes the request id of every response."""
        return httpx.Client(
            base_url=self.url,
            follow_redirects=False,
            timeout=15,
            event_hooks={"response": [lambda response: self.request_ids.add(response.headers["x-request-id"])]},
        )


@pytest.fixture
def server(base_environ: dict[str, str], own_database_url: str, tmp_path: Path) -> Iterator[Server]:
    with mailing_server(base_environ | {"IDP_DATABASE_URL": own_database_url}, tmp_path / "serve.log") as mailing:
        password = "first passphrase " + secrets.token_urlsafe(12)
        with mailing.ctx.db.begin() as db:
            made = create_client(
                db,
                mailing.ctx.secret_key,
                name="Secretive app",
                redirect_uris=["https://rp.example/cb"],
                first_party=True,
                allow_http=True,
            )
            user = create_user(db, email=f"keeper-{secrets.token_hex(4)}@example.com", password=password, verified=True)
            client = RegisteredClient(made.client.id, made.secret, "https://rp.example/cb")
            person = Person(user.id, user.email, password)
        yield Server(mailing.live.url, mailing.live.log, own_database_url, mailing.sink, client, person)


def cookie_values(web: httpx.Client) -> list[str]:
    return [cookie.value for cookie in web.cookies.jar if cookie.value and "session" in cookie.name]


def json_lines(text: str) -> list[dict[str, object]]:
    """The log's JSON lines (each a JSON object)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def rows_of(database_url: str, *tables: str) -> dict[str, list[str]]:
    """Every row of the tables (all of them when none is named), each as JSON of all its columns."""
    engine = create_engine(database_url)
    try:
        names = tables or tuple(inspect(engine).get_table_names())
        with engine.connect() as connection:
            return {
                name: [
                    json.dumps(dict(row._mapping), default=str)
                    for row in connection.execute(text(f'SELECT * FROM "{name}"'))
                ]  # noqa: S608
                for name in names
            }
    finally:
        engine.dispose()


def appears(secret: str, text: str) -> bool:
    """A six-digit code counts only as a whole word: timestamps and digests hold runs of digits."""
    if not secret.isdigit():
        return secret in text
    return re.search(rf"(?<![0-9A-Za-z]){secret}(?![0-9A-Za-z])", text) is not None


def test_no_password_code_or_token_is_logged_audited_or_queued(server: Server) -> None:
    client, person = server.client, server.person
    used: dict[str, str] = {"password": person.password or "", "client secret": client.client_secret or ""}

    # Sign in through the code flow with PKCE; tokens; a refresh; userinfo.
    with server.browser() as web:
        verifier, challenge = pkce_pair()
        callback = sign_in(web, client, person, challenge)
        used |= {"authorization code": callback["code"], "state": callback["state"], "PKCE verifier": verifier}
        tokens = exchange(web, client, callback["code"], verifier).json()
        used |= {
            "access token": tokens["access_token"],
            "refresh token": tokens["refresh_token"],
            "ID token": tokens["id_token"],
        }
        refreshed = web.post(
            "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=client.auth
        )
        assert refreshed.status_code == 200, refreshed.text
        used |= {
            "rotated refresh token": refreshed.json()["refresh_token"],
            "refreshed access token": refreshed.json()["access_token"],
        }
        bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
        assert web.get("/userinfo", headers=bearer).status_code == 200
        used |= {f"session cookie {i}": value for i, value in enumerate(cookie_values(web))}

    # A sign-in with another password fails.
    wrong = "wrong passphrase " + secrets.token_urlsafe(12)
    used["wrong password"] = wrong
    with server.browser() as web:
        assert post_login(web, person.email, wrong).status_code == 400

    # A reset through the emailed link, then a sign-in with the new password.
    new_password = "second passphrase " + secrets.token_urlsafe(12)
    used["new password"] = new_password
    with server.browser() as web:
        page = web.get("/password/forgot")
        assert web.post("/password/forgot", data={**hidden_fields(page.text), "email": person.email}).status_code == 200
        found = RESET_LINK.search(text_of(server.sink.wait_for(person.email, "Reset your password")))
        assert found, "the reset email holds a link"
        link = urlsplit(found.group(0))
        used["reset token"] = query_of(found.group(0))["token"]
        page = web.get(f"{link.path}?{link.query}")
        assert page.status_code == 200, page.text
        done = web.post(
            "/password/reset",
            data={**hidden_fields(page.text), "password": new_password, "password_confirm": new_password},
        )
        assert done.status_code == 200, done.text
    with server.browser() as web:
        assert post_login(web, person.email, new_password).status_code == 303
        used |= {f"new session cookie {i}": value for i, value in enumerate(cookie_values(web))}

    # A sign-in with a one-time code sent by email.
    with server.browser() as web:
        asked = ask_for_code(web, person.email)
        assert asked.status_code == 303, asked.text
        code = EMAIL_CODE.search(text_of(server.sink.wait_for(person.email, "Your sign-in code")))
        assert code, "the code email holds a code"
        used["one-time code"] = code.group(1)
        entered = enter_code(web, code.group(1))
        assert entered.status_code == 303, entered.text

    # A change of email address: a wrong password first, then the right one and the emailed link.
    new_email = f"moved-{secrets.token_hex(4)}@example.org"
    wrong_again = "not my passphrase " + secrets.token_urlsafe(12)
    used["wrong password on the email form"] = wrong_again
    with server.browser() as web:
        assert post_login(web, person.email, new_password).status_code == 303
        for typed in (wrong_again, new_password):
            page = web.get("/account/email")
            fields = {**hidden_fields(page.text), "email": new_email, "current_password": typed}
            asked = web.post("/account/email", data=fields)
        assert asked.status_code == 303, asked.text
        found = CHANGE_LINK.search(text_of(server.sink.wait_for(new_email, "Confirm your new email address")))
        assert found, "the email holds a link"
        used["email change token"] = query_of(found.group(0))["token"]
        link = urlsplit(found.group(0))
        assert follow_email_change_link(web, f"{link.path}?{link.query}").status_code == 200

    # A newcomer signs up with a code, then sets a first password with the code emailed for it.
    newcomer = f"newcomer-{secrets.token_hex(4)}@example.com"
    first_password = "first of mine " + secrets.token_urlsafe(12)
    used["first password"] = first_password
    with server.browser() as web:
        assert ask_for_code(web, newcomer).status_code == 303
        code = EMAIL_CODE.search(text_of(server.sink.wait_for(newcomer, "Your sign-in code")))
        assert code, "the code email holds a code"
        used["newcomer's code"] = code.group(1)
        assert enter_code(web, code.group(1)).status_code == 303
        page = web.get("/account")
        assert web.post("/account/password/set/code", data=hidden_fields(page.text)).status_code == 200
        code = SET_PASSWORD_CODE.search(text_of(server.sink.wait_for(newcomer, "Your code to set a password")))
        assert code, "the email holds a code"
        used["set-password code"] = code.group(1)
        page = web.get("/account/password/set")
        fields = {"code": code.group(1), "password": first_password, "password_confirm": first_password}
        assert web.post("/account/password/set", data={**hidden_fields(page.text), **fields}).status_code == 303

    log_text = server.log.read_text()
    audited, queued = AuditEvent.__tablename__, OutboxMessage.__tablename__
    kept = rows_of(server.database_url, audited, queued)
    events = " ".join(kept[audited])
    # The search is not vacuous: the day's requests and events are all there to search.
    logged_routes = {line.get("route") for line in json_lines(log_text)}
    for route in (
        "/authorize",
        "/login",
        "/token",
        "/userinfo",
        "/password/reset",
        "/login/verify",
        "/account/email",
        "/account/email/confirm",
        "/account/password/set",
    ):
        assert route in logged_routes, route
    for event in (
        "sign_in",
        "password_reset",
        "code_sent",
        "code_verified",
        "email_change_requested",
        "email_changed",
        "password_set",
    ):
        assert f'"event": "{event}"' in events, event
    assert len(kept[queued]) >= 2

    assert all(used.values()) and len(set(used.values())) == len(used)
    leaks = [f"{name} in the log" for name, value in used.items() if appears(value, log_text)]
    for table in (audited, queued):
        leaks += [
            f"{name} in {table}" for name, value in used.items() if any(appears(value, row) for row in kept[table])
        ]
    # The credentials are in no table in the clear; only what the client sent back as-is (state) may be.
    for table, rows in rows_of(server.database_url).items():
        leaks += [
            f"{name} in {table}"
            for name, value in used.items()
            if name != "state" and any(appears(value, row) for row in rows)
        ]
    assert leaks == []


def test_serve_writes_json_lines_with_request_ids(server: Server) -> None:
    with server.browser() as web:
        assert post_login(web, server.person.email, "not it " + secrets.token_hex(4)).status_code == 400
        assert web.get("/healthz").status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(f'"{rid}"' in server.log.read_text() for rid in server.request_ids):
        time.sleep(0.05)
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= set(line), line
    access = [line for line in lines if line["logger"] == "idp.access"]
    assert {line["request_id"] for line in access} >= server.request_ids
    assert [line["route"] for line in access if line["request_id"] in server.request_ids] == [
        "/login",
        "/login",
        "/healthz",
    ]
