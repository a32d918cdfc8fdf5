"""No secret reaches a log line, an audit event or a queued message.

A real ``idp serve`` (its own SQLite database, email by SMTP to an aiosmtpd sink, so the bodies of
messages are not printed as the console backend prints them by contract) goes through a person's
day: a sign-in by the code flow with PKCE, tokens, a refresh, userinfo, a failed sign-in with
another password, a reset through the emailed link, a sign-in with the new password and one with a
code sent by email. Then every line it wrote, every audit event (every column, the JSON detail
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
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, inspect, text

from idp.accounts.users import create_user
from idp.context import Context
from idp.migrate import upgrade
from idp.oauth.clients import create_client
from idp.storage import AuditEvent, OutboxMessage

from .conftest import free_port, make_settings, start_server
from .flows import RegisteredClient, exchange, hidden_fields, pkce_pair, query_of, sign_in
from .flows import TestUser as Person
from .test_login import post_login

RESET_LINK = re.compile(r"\S+/password/reset\?token=[A-Za-z0-9_\-%]+")
EMAIL_CODE = re.compile(r"Your one-time code is (\d{6})\.")


@dataclass
class Sink:
    """An aiosmtpd handler keeping every message it accepts."""

    received: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=email_policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        return "250 OK"

    def wait_for(self, to: str, subject_starts: str) -> str:
        """The text of the first email to ``to`` whose subject starts so."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for message in list(self.received):
                if message["To"] == to and str(message["Subject"]).startswith(subject_starts):
                    body = message.get_body(("plain",))
                    assert body is not None
                    return body.get_content()
            time.sleep(0.05)
        raise AssertionError(f"no email {subject_starts!r}... to {to}")


@dataclass
class Server:
    url: str
    log: Path
    database_url: str
    sink: Sink
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
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    database_url = own_database_url
    upgrade(database_url)
    environ = {
        **base_environ,
        "IDP_DATABASE_URL": database_url,
        "IDP_EMAIL_BACKEND": "smtp",
        "IDP_SMTP_HOST": "127.0.0.1",
        "IDP_SMTP_PORT": str(controller.port),
    }
    log = tmp_path / "serve.log"
    process, url = start_server(environ, log)
    ctx = Context.build(make_settings(environ, IDP_ISSUER=url))
    password = "first passphrase " + secrets.token_urlsafe(12)
    with ctx.sessions.begin() as db:
        made = create_client(db, ctx.secret_key, name="Secretive app", redirect_uris=["https://rp.example/cb"],
                             first_party=True, allow_http=True)
        user = create_user(db, email=f"keeper-{secrets.token_hex(4)}@example.com", password=password, verified=True)
        client = RegisteredClient(made.client.id, made.secret, "https://rp.example/cb")
        person = Person(user.id, user.email, password)
    ctx.close()
    try:
        yield Server(url, log, database_url, sink, client, person)
    finally:
        process.terminate()
        process.wait(timeout=15)
        controller.stop()


def cookie_values(web: httpx.Client) -> list[str]:
    return [cookie.value for cookie in web.cookies.jar if cookie.value and "session" in cookie.name]


def rows_of(database_url: str, *tables: str) -> dict[str, list[str]]:
    """Every row of the tables (all of them when none is named), each as JSON of all its columns."""
    engine = create_engine(database_url)
    try:
        names = tables or tuple(inspect(engine).get_table_names())
        with engine.connect() as connection:
            return {
                name: [json.dumps(dict(row._mapping), default=str)
                       for row in connection.execute(text(f'SELECT * FROM "{name}"'))]  # noqa: S608
                for name in names
            }
    finally:
        engine.dispose()


def test_no_password_code_or_token_is_logged_audited_or_queued(server: Server) -> None:
    client, person = server.client, server.person
    used: dict[str, str] = {"password": person.password or "", "client secret": client.client_secret or ""}

    # Sign in through the code flow with PKCE; tokens; a refresh; userinfo.
    with server.browser() as web:
        verifier, challenge = pkce_pair()
        callback = sign_in(web, client, person, challenge)
        used |= {"authorization code": callback["code"], "state": callback["state"], "PKCE verifier": verifier}
        tokens = exchange(web, client, callback["code"], verifier).json()
        used |= {"access token": tokens["access_token"], "refresh token": tokens["refresh_token"],
                 "ID token": tokens["id_token"]}
        refreshed = web.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                             auth=client.auth)
        assert refreshed.status_code == 200, refreshed.text
        used |= {"rotated refresh token": refreshed.json()["refresh_token"],
                 "refreshed access token": refreshed.json()["access_token"]}
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
        found = RESET_LINK.search(server.sink.wait_for(person.email, "Reset your password"))
        assert found, "the reset email holds a link"
        link = urlsplit(found.group(0))
        used["reset token"] = query_of(found.group(0))["token"]
        page = web.get(f"{link.path}?{link.query}")
        assert page.status_code == 200, page.text
        done = web.post("/password/reset", data={**hidden_fields(page.text), "password": new_password,
                                                 "password_confirm": new_password})
        assert done.status_code == 200, done.text
    with server.browser() as web:
        assert post_login(web, person.email, new_password).status_code == 303
        used |= {f"new session cookie {i}": value for i, value in enumerate(cookie_values(web))}

    # A sign-in with a one-time code sent by email.
    with server.browser() as web:
        page = web.get("/login/code")
        asked = web.post("/login/code", data={**hidden_fields(page.text), "identifier": person.email})
        assert asked.status_code == 303, asked.text
        code = EMAIL_CODE.search(server.sink.wait_for(person.email, "Your sign-in code"))
        assert code, "the code email holds a code"
        used["one-time code"] = code.group(1)
        page = web.get("/login/verify")
        entered = web.post("/login/verify", data={**hidden_fields(page.text), "code": code.group(1)})
        assert entered.status_code == 303, entered.text

    log_text = server.log.read_text()
    audited, queued = AuditEvent.__tablename__, OutboxMessage.__tablename__
    kept = rows_of(server.database_url, audited, queued)
    events = " ".join(kept[audited])
    # The search is not vacuous: the day's requests and events are all there to search.
    for route in ("/authorize", "/login", "/token", "/userinfo", "/password/reset", "/login/verify"):
        assert f'"route": "{route}"' in log_text, route
    for event in ("sign_in", "password_reset", "code_sent", "code_verified"):
        assert f'"event": "{event}"' in events, event
    assert len(kept[queued]) >= 2

    assert all(used.values()) and len(set(used.values())) == len(used)
    leaks = [f"{name} in the log" for name, value in used.items() if value in log_text]
    for table in (audited, queued):
        leaks += [f"{name} in {table}" for name, value in used.items() if any(value in row for row in kept[table])]
    # The credentials are in no table in the clear; only what the client sent back as-is (state) may be.
    for table, rows in rows_of(server.database_url).items():
        leaks += [f"{name} in {table}" for name, value in used.items()
                  if name != "state" and any(value in row for row in rows)]
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
        "/login", "/login", "/healthz"
    ]
