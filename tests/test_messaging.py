"""Email and SMS delivery: the outbox, the worker, and every backend against a real sink or stub.

The adapters run unchanged: SMTP against an aiosmtpd sink (with STARTTLS and AUTH), Twilio,
Kavenegar and the webhook against a local HTTP stub that checks the request each provider's API
expects and answers as the provider does. Every test gets its own SQLite database, so the worker
only ever sees the messages the test queued.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import logging
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text, update
from starlette.testclient import TestClient

from idp.accounts import otp, recovery, registration
from idp.accounts.codes_vocabulary import Channel
from idp.accounts.users import create_user
from idp.app import create_app
from idp.context import Context
from idp.messaging.outbox import enqueue
from idp.messaging.sms import sms_backend
from idp.messaging.worker import MAX_RETRY, deliver_due
from idp.migrate import upgrade
from idp.security.sealing import OUTBOX, Sealer
from idp.storage import ActionToken, AuditEvent, OneTimeCode, OutboxMessage, now

from .conftest import SECRET_KEY, TEST_ISSUER, free_port, make_settings
from .services import QuietHandler, SmtpSink, TcpProxy, http_server, smtp_sink

PHONE = "+989121234567"
TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN = "twilio-auth-token-not-for-logs"
KAVENEGAR_KEY = "6A2B-kavenegar-api-key-not-for-logs"


# --- fixtures: a database per test, contexts built from settings, a stub HTTP provider, an SMTP sink


@pytest.fixture
def environ(base_environ: dict[str, str], own_database_url: str) -> dict[str, str]:
    """The shared settings, with a fresh database of this test's own."""
    upgrade(own_database_url)
    return {**base_environ, "IDP_DATABASE_URL": own_database_url}


@pytest.fixture
def build(environ: dict[str, str]) -> Iterator[Callable[..., Context]]:
    """``build(IDP_SMS_BACKEND=..., ...)``: a Context as a server process would make it."""
    made: list[Context] = []

    def make(**overrides: str) -> Context:
        ctx = Context.build(make_settings(environ, **overrides))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, list[str]]:
        assert self.headers["content-type"] == "application/x-www-form-urlencoded"
        return parse_qs(self.body.decode(), keep_blank_values=True, strict_parsing=True)


@dataclass
class Answer:
    status: int
    payload: Any
    delay: float = 0.0


@dataclass
class Stub:
    """A provider's API on 127.0.0.1: records each request, answers from ``answers`` (the last one repeats)."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=lambda: [Answer(200, {})])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self, request: Recorded) -> Answer:
        with self.lock:
            self.requests.append(request)
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            answer = state.next_answer(request)
            time.sleep(answer.delay)
            try:
                self.respond(answer.status, json.dumps(answer.payload).encode())
            except OSError:
                pass  # the client gave up waiting: that is what the slow-provider test wants

    with http_server(Handler) as url:
        state.url = url
        yield state


def certificate_for_localhost(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


# --- helpers


def queue_sms(ctx: Context, code: str = "493817", to: str = PHONE, useful_for: int = 3600) -> str:
    with ctx.db.begin() as db:
        return enqueue(
            db, ctx.secret_key, Channel.SMS, to, "test_message", {"code": code}, useful_until=now() + useful_for
        ).id


def queue_email(ctx: Context, to: str = "ann@example.com", name: str = "Ann", code: str = "493817") -> str:
    context = {"name": name, "code": code, "link": "https://idp.example/verify?t=abc&u=1"}
    with ctx.db.begin() as db:
        return enqueue(db, ctx.secret_key, Channel.EMAIL, to, "test_message", context, useful_until=now() + 3600).id


def row(ctx: Context, message_id: str) -> OutboxMessage:
    with ctx.db() as db:
        message = db.get(OutboxMessage, message_id)
        assert message is not None
        return message


def make_due(ctx: Context, message_id: str) -> None:
    """Time passes: the retry the worker scheduled is due now."""
    with ctx.db.begin() as db:
        db.execute(update(OutboxMessage).where(OutboxMessage.id == message_id).values(next_attempt_at=now()))


def twilio(build: Callable[..., Context], stub: Stub, **overrides: str) -> Context:
    return build(
        IDP_SMS_BACKEND="twilio",
        IDP_TWILIO_ACCOUNT_SID=TWILIO_SID,
        IDP_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        IDP_TWILIO_FROM="+15005550006",
        IDP_TWILIO_API_BASE=stub.url,
        **overrides,
    )


TWILIO_CREATED = Answer(201, {"sid": "SM" + "0" * 32, "status": "queued"})


# --- SMTP


def test_smtp_delivers_text_and_html_with_sender_recipient_and_subject(build: Callable[..., Context]) -> None:
    sink, controller = smtp_sink()
    try:
        ctx = build(
            IDP_EMAIL_BACKEND="smtp",
            IDP_SMTP_HOST="127.0.0.1",
            IDP_SMTP_PORT=str(controller.port),
            IDP_EMAIL_FROM="accounts@idp.example",
        )
        message_id = queue_email(ctx, to="ann@example.com", name="<b>Ann</b>", code="493817")
        assert sink.received == [], "queueing sends nothing"

        assert deliver_due(ctx) == 1
    finally:
        controller.stop()

    (received,) = sink.received
    assert received.mail_from == "accounts@idp.example"
    assert received.rcpt_tos == ["ann@example.com"]
    message = received.message
    assert message["From"] == "accounts@idp.example"
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == "Test message from idp"
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert "Hello <b>Ann</b>," in plain.get_content(), "text is not escaped"
    assert "Your test code is 493817." in plain.get_content()
    assert "https://idp.example/verify?t=abc&u=1" in plain.get_content()
    assert "<p>Hello &lt;b&gt;Ann&lt;/b&gt;,</p>" in html.get_content(), "HTML is autoescaped"
    assert "<strong>493817</strong>" in html.get_content()
    assert 'href="https://idp.example/verify?t=abc&amp;u=1"' in html.get_content()
    assert not received.tls and received.login is None

    sent = row(ctx, message_id)
    assert sent.sent_at is not None and sent.failed_at is None
    assert sent.body is None, "the sealed body is dropped once sent"
    assert deliver_due(ctx) == 0, "a sent message is never sent again"


def _authenticator(username: bytes, password: bytes) -> Callable[..., AuthResult]:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (username, password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return check


def test_smtp_starttls_and_login(
    build: Callable[..., Context], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = certificate_for_localhost(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the client trusts the test CA through the default store
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    sink, controller = smtp_sink(
        tls_context=tls,
        require_starttls=True,
        authenticator=_authenticator(b"mailer", b"s3cret-pass"),
        auth_required=True,
    )
    try:
        settings = {
            "IDP_EMAIL_BACKEND": "smtp",
            "IDP_SMTP_HOST": "127.0.0.1",
            "IDP_SMTP_PORT": str(controller.port),
            "IDP_SMTP_STARTTLS": "on",
            "IDP_SMTP_USERNAME": "mailer",
        }
        wrong = build(**settings, IDP_SMTP_PASSWORD="wrong-password")
        refused = queue_email(wrong)
        assert deliver_due(wrong) == 0
        failed = row(wrong, refused)
        assert failed.last_error == "smtp: SMTPAuthenticationError 535"
        assert failed.attempts == 1 and failed.sent_at is None

        right = build(**settings, IDP_SMTP_PASSWORD="s3cret-pass")
        make_due(right, refused)
        assert deliver_due(right) == 1
    finally:
        controller.stop()
    (received,) = sink.received
    assert received.tls, "the message went over STARTTLS"
    assert received.login == b"mailer"
    assert received.message["Subject"] == "Test message from idp"


def test_smtp_without_starttls_is_refused_by_a_server_that_requires_it(build: Callable[..., Context]) -> None:
    sink, controller = smtp_sink(require_starttls=True, tls_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    try:
        ctx = build(IDP_EMAIL_BACKEND="smtp", IDP_SMTP_HOST="127.0.0.1", IDP_SMTP_PORT=str(controller.port))
        message_id = queue_email(ctx)
        assert deliver_due(ctx) == 0
    finally:
        controller.stop()
    assert sink.received == []
    assert row(ctx, message_id).last_error == "smtp: SMTPSenderRefused 530"


# --- SMS providers


def test_twilio_messages_api_request(build: Callable[..., Context], stub: Stub) -> None:
    stub.answers = [TWILIO_CREATED]
    ctx = twilio(build, stub)
    message_id = queue_sms(ctx, code="271828")

    assert deliver_due(ctx) == 1

    (request,) = stub.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    expected = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.form() == {"To": [PHONE], "From": ["+15005550006"], "Body": ["idp test code: 271828"]}
    assert row(ctx, message_id).sent_at is not None


def test_twilio_error_names_status_and_code_but_no_secret(build: Callable[..., Context], stub: Stub) -> None:
    stub.answers = [Answer(401, {"code": 20003, "message": "Authenticate", "status": 401})]
    ctx = twilio(build, stub)
    message_id = queue_sms(ctx, code="271828")

    assert deliver_due(ctx) == 0

    failed = row(ctx, message_id)
    assert failed.last_error == "twilio: HTTP 401 (code 20003)"
    assert failed.sent_at is None and failed.attempts == 1


@pytest.mark.parametrize("sender", ["10004346", None])
def test_kavenegar_send_api_request(build: Callable[..., Context], stub: Stub, sender: str | None) -> None:
    stub.answers = [
        Answer(
            200,
            {
                "return": {"status": 200, "message": "تایید شد"},
                "entries": [{"messageid": 8792343, "status": 1, "receptor": PHONE}],
            },
        )
    ]
    extra = {"IDP_KAVENEGAR_SENDER": sender} if sender else {}
    ctx = build(
        IDP_SMS_BACKEND="kavenegar", IDP_KAVENEGAR_API_KEY=KAVENEGAR_KEY, IDP_KAVENEGAR_API_BASE=stub.url, **extra
    )
    message_id = queue_sms(ctx, code="141421")

    assert deliver_due(ctx) == 1

    (request,) = stub.requests
    assert request.method == "POST"
    assert request.path == f"/v1/{KAVENEGAR_KEY}/sms/send.json"
    expected = {"receptor": [PHONE], "message": ["idp test code: 141421"]}
    assert request.form() == (expected | {"sender": [sender]} if sender else expected)
    assert row(ctx, message_id).sent_at is not None


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            Answer(200, {"return": {"status": 412, "message": "sender is invalid"}, "entries": None}),
            "kavenegar: status 412",
        ),
        (
            Answer(418, {"return": {"status": 418, "message": "credit is not enough"}, "entries": None}),
            "kavenegar: HTTP 418 (code 418)",
        ),
        (Answer(200, ["not", "what", "kavenegar", "says"]), "kavenegar: unexpected answer"),
    ],
)
def test_kavenegar_failure_status_is_a_failure_without_the_key(
    build: Callable[..., Context], stub: Stub, answer: Answer, error: str
) -> None:
    stub.answers = [answer]
    ctx = build(IDP_SMS_BACKEND="kavenegar", IDP_KAVENEGAR_API_KEY=KAVENEGAR_KEY, IDP_KAVENEGAR_API_BASE=stub.url)
    message_id = queue_sms(ctx)

    assert deliver_due(ctx) == 0

    failed = row(ctx, message_id)
    assert failed.last_error == error
    assert failed.sent_at is None and failed.attempts == 1


def test_webhook_posts_json(build: Callable[..., Context], stub: Stub) -> None:
    stub.answers = [Answer(204, None)]
    ctx = build(IDP_SMS_BACKEND="webhook", IDP_SMS_WEBHOOK_URL=stub.url + "/hooks/sms")
    message_id = queue_sms(ctx, code="161803")

    assert deliver_due(ctx) == 1

    (request,) = stub.requests
    assert request.method == "POST" and request.path == "/hooks/sms"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"to": PHONE, "body": "idp test code: 161803"}
    assert row(ctx, message_id).sent_at is not None


def test_unreachable_provider_is_a_transport_error(build: Callable[..., Context]) -> None:
    ctx = build(IDP_SMS_BACKEND="webhook", IDP_SMS_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/sms")
    message_id = queue_sms(ctx)

    assert deliver_due(ctx) == 0

    assert row(ctx, message_id).last_error == "webhook: ConnectError"


def test_console_backends_print_messages_to_the_log(
    build: Callable[..., Context], caplog: pytest.LogCaptureFixture
) -> None:
    ctx = build()
    queue_email(ctx, to="dev@example.com", code="112358")
    queue_sms(ctx, code="132134")
    with caplog.at_level(logging.INFO, logger="idp.messages"):
        assert deliver_due(ctx) == 2
    printed = "\n".join(r.getMessage() for r in caplog.records if r.name == "idp.messages")
    assert "email to dev@example.com" in printed
    assert "Subject: Test message from idp" in printed
    assert "Your test code is 112358." in printed
    assert f"sms to {PHONE}" in printed and "idp test code: 132134" in printed


# --- the queue: retries, giving up, slow providers, restarts, races, sealing, transactions


def test_a_provider_error_is_retried_later_then_delivered_once(build: Callable[..., Context], stub: Stub) -> None:
    stub.answers = [Answer(500, {"message": "oops"}), TWILIO_CREATED]
    ctx = twilio(build, stub)
    message_id = queue_sms(ctx)

    before = now()
    assert deliver_due(ctx) == 0
    failed = row(ctx, message_id)
    assert failed.attempts == 1 and failed.last_error == "twilio: HTTP 500"
    assert failed.claimed_until is None
    assert before + 5 <= failed.next_attempt_at <= now() + 5, "the first retry waits 5 seconds"

    assert deliver_due(ctx) == 0
    assert len(stub.requests) == 1, "not retried before its time"

    make_due(ctx, message_id)
    assert deliver_due(ctx) == 1
    assert len(stub.requests) == 2
    delivered = row(ctx, message_id)
    assert delivered.sent_at is not None and delivered.body is None and delivered.last_error is None

    make_due(ctx, message_id)
    assert deliver_due(ctx) == 0 and len(stub.requests) == 2, "delivered once"


def test_backoff_doubles_up_to_two_minutes_and_a_quarter_of_the_life_left(
    build: Callable[..., Context], stub: Stub
) -> None:
    stub.answers = [Answer(503, {})]
    ctx = twilio(build, stub)
    message_id = queue_sms(ctx, useful_for=24 * 3600)
    waits = []
    for _ in range(8):
        make_due(ctx, message_id)
        stamp = now()
        deliver_due(ctx)
        waits.append(row(ctx, message_id).next_attempt_at - stamp)
    assert [round(w / 5) * 5 for w in waits] == [5, 10, 20, 40, 80, MAX_RETRY, MAX_RETRY, MAX_RETRY]

    code_id = queue_sms(ctx, useful_for=200)
    for _ in range(5):
        make_due(ctx, code_id)
        deliver_due(ctx)
    stamp = now()
    make_due(ctx, code_id)
    deliver_due(ctx)
    assert row(ctx, code_id).next_attempt_at - stamp <= 50, "no wait of 80 s for a code with 200 s to live"


def test_a_message_no_longer_useful_is_dropped_unsent_with_audit_event_log_line_and_metric(
    build: Callable[..., Context], stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    stub.answers = [Answer(503, {"message": "unavailable"}), TWILIO_CREATED]
    ctx = twilio(build, stub)
    message_id = queue_sms(ctx, code="918273", useful_for=60)
    before = dropped_count("sms")

    with caplog.at_level(logging.INFO):
        assert deliver_due(ctx) == 0
        assert row(ctx, message_id).next_attempt_at <= now() + 15, "a quarter of its minute at most"
        travel(ctx, 60)
        assert deliver_due(ctx) == 0

    assert len(stub.requests) == 1, "the provider is back, but a code past its expiry is not sent"
    dropped = row(ctx, message_id)
    assert dropped.failed_at is not None and dropped.sent_at is None and dropped.attempts == 1
    assert dropped.body is None, "nothing keeps the code once the message is dropped"
    assert dropped.last_error == "twilio: HTTP 503"
    assert dropped_count("sms") == before + 1

    with ctx.db() as db:
        (event,) = db.scalars(select(AuditEvent).where(AuditEvent.event == "message_failed"))
    assert event.outcome == "failure"
    assert event.detail == {
        "message_id": message_id,
        "channel": "sms",
        "recipient": "+98912***4567",
        "attempts": 1,
        "error": "twilio: HTTP 503",
        "reason": "expired",
    }

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and message_id in errors[0].getMessage()
    assert "no longer useful" in errors[0].getMessage()
    for record in caplog.records:
        assert "918273" not in record.getMessage(), "no log line carries the message"
        assert TWILIO_TOKEN not in record.getMessage()

    make_due(ctx, message_id)
    assert deliver_due(ctx) == 0 and len(stub.requests) == 1, "a dropped message stays dropped"


def test_a_slow_provider_fails_the_attempt_within_the_timeout(build: Callable[..., Context], stub: Stub) -> None:
    stub.answers = [Answer(201, {}, delay=2.0)]
    ctx = twilio(build, stub)
    ctx.sms_backend = sms_backend(ctx.settings, timeout=httpx.Timeout(0.3))  # the real adapter, a shorter wait
    message_id = queue_sms(ctx)

    started = time.monotonic()
    assert deliver_due(ctx) == 0
    assert time.monotonic() - started < 1.5

    failed = row(ctx, message_id)
    assert failed.last_error == "twilio: ReadTimeout"
    assert failed.attempts == 1 and failed.claimed_until is None and failed.sent_at is None


def test_a_restart_loses_nothing_and_the_app_worker_delivers(
    build: Callable[..., Context], environ: dict[str, str], stub: Stub
) -> None:
    stub.answers = [TWILIO_CREATED]
    overrides = {
        "IDP_SMS_BACKEND": "twilio",
        "IDP_TWILIO_ACCOUNT_SID": TWILIO_SID,
        "IDP_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "IDP_TWILIO_FROM": "+15005550006",
        "IDP_TWILIO_API_BASE": stub.url,
    }
    first = build(**overrides)
    message_id = queue_sms(first, code="577215")
    first.close()  # the process that queued it is gone before any delivery

    app = create_app(make_settings(environ, **overrides))
    try:
        with TestClient(app, base_url=TEST_ISSUER) as http:
            assert http.get("/healthz").status_code == 200
            deadline = time.monotonic() + 5
            while not stub.requests and time.monotonic() < deadline:
                time.sleep(0.05)
        (request,) = stub.requests
        assert request.form()["Body"] == ["idp test code: 577215"]
        assert row(app.state.ctx, message_id).sent_at is not None
    finally:
        app.state.ctx.close()


def test_two_workers_racing_send_each_message_exactly_once(build: Callable[..., Context], stub: Stub) -> None:
    stub.answers = [Answer(201, {}, delay=0.05)]
    workers = [twilio(build, stub), twilio(build, stub)]
    codes = [f"{n:06d}" for n in range(100_001, 100_009)]
    for code in codes:
        queue_sms(workers[0], code=code)
    start = threading.Barrier(len(workers))
    sent: list[int] = []

    def work(ctx: Context) -> None:
        start.wait()
        sent.append(deliver_due(ctx))

    threads = [threading.Thread(target=work, args=(ctx,)) for ctx in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    bodies = sorted(request.form()["Body"][0] for request in stub.requests)
    assert bodies == sorted(f"idp test code: {code}" for code in codes)
    assert sum(sent) == len(codes)
    with workers[0].db() as db:
        assert db.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))) == 0


def test_the_stored_body_is_sealed_and_cleared_after_delivery(build: Callable[..., Context], stub: Stub) -> None:
    stub.answers = [TWILIO_CREATED]
    ctx = twilio(build, stub)
    email_id = queue_email(ctx, code="662607")
    sms_id = queue_sms(ctx, code="662607")

    with ctx.engine.connect() as connection:
        stored = {id_: body for id_, body in connection.execute(text("SELECT id, body FROM outbox"))}
    for body in stored.values():
        assert "662607" not in body and "test code" not in body and "verify" not in body
    opened = Sealer(SECRET_KEY, OUTBOX).open(stored[email_id])
    assert "662607" in opened, "it is the message, sealed under IDP_SECRET_KEY"
    with pytest.raises(InvalidToken):
        Sealer("another-secret-key-" + "y" * 32, OUTBOX).open(stored[sms_id])

    assert deliver_due(ctx) == 2
    with ctx.engine.connect() as connection:
        assert connection.execute(text("SELECT body FROM outbox")).scalars().all() == [None, None]


def test_a_message_queued_in_a_rolled_back_transaction_does_not_exist(build: Callable[..., Context]) -> None:
    ctx = build()
    with ctx.db() as db:
        enqueue(
            db, ctx.secret_key, Channel.SMS, "+15551230000", "test_message", {"code": "000001"}, useful_until=now() + 60
        )
        db.rollback()
    with ctx.db() as db, db.begin():
        enqueue(
            db, ctx.secret_key, Channel.SMS, "+15551239999", "test_message", {"code": "000002"}, useful_until=now() + 60
        )

    with ctx.db() as db:
        assert list(db.scalars(select(OutboxMessage.recipient))) == ["+15551239999"]


# --- outages: a message is retried for as long as it is useful, and no longer


def travel(ctx: Context, seconds: int) -> None:
    """``seconds`` go by: every time stored for the messages, codes and links moves that far into the past."""
    with ctx.db.begin() as db:
        for model in (OutboxMessage, OneTimeCode, ActionToken):
            table = model.__table__
            moved = {column.name: column - seconds for column in table.c if column.name.endswith(("_at", "_until"))}
            db.execute(update(table).values(moved))


def next_due(ctx: Context) -> int | None:
    """When the next attempt at a message neither sent nor dropped is due."""
    with ctx.db() as db:
        return db.scalar(
            select(func.min(OutboxMessage.next_attempt_at)).where(
                OutboxMessage.sent_at.is_(None), OutboxMessage.failed_at.is_(None)
            )
        )


def run_for(workers: list[Context], seconds: int) -> None:
    """The workers' rounds through ``seconds`` of time, racing as processes do; the clock jumps from
    each retry the worker scheduled to the next, so hours pass in moments through the real code."""
    left = seconds
    while (due := next_due(workers[0])) is not None and due - now() <= left:
        wait = max(0, due - now())
        travel(workers[0], wait)
        left -= wait
        race(workers)
    travel(workers[0], left)


def race(workers: list[Context]) -> None:
    """One round of every worker at once."""
    start = threading.Barrier(len(workers))

    def work(ctx: Context) -> None:
        start.wait()
        deliver_due(ctx)

    threads = [threading.Thread(target=work, args=(ctx,)) for ctx in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def queued_by(ctx: Context, action: Callable[[Any], object]) -> str:
    """The outbox row ``action`` queued, committed with what caused it as the pages do."""
    with ctx.db() as db:
        before = set(db.scalars(select(OutboxMessage.id)))
    with ctx.db.begin() as db:
        action(db)
    with ctx.db() as db:
        (made,) = set(db.scalars(select(OutboxMessage.id))) - before
    return made


def queue_one_of_each(ctx: Context) -> dict[str, str]:
    """What the pages queue, by the services that queue it: a code by email and by SMS, a reset
    link (an hour), a verification link (a day) and a notice; name -> outbox id."""
    with ctx.db.begin() as db:
        ann = create_user(db, email="ann@example.com", verified=True).id
        bob = create_user(db, email="bob@example.com").id
    settings, key = ctx.settings, ctx.secret_key

    def sign_in_code(db: Any) -> None:
        otp.send(ctx, db, purpose="sign_in", channel="email", identifier="ann@example.com", user_id=ann)

    def phone_code(db: Any) -> None:
        otp.send(ctx, db, purpose="verify_phone", channel="sms", identifier=PHONE, user_id=ann)

    def verification_link(db: Any) -> None:
        user = db.get_one(registration.User, bob)
        registration.send_link(db, settings, key, user, registration.FollowUp())

    def notice(db: Any) -> None:
        recovery.notify_password_changed(db, settings, key, db.get_one(registration.User, ann))

    return {
        "email code": queued_by(ctx, sign_in_code),
        "sms code": queued_by(ctx, phone_code),
        "reset link": queued_by(ctx, lambda db: recovery.request_reset(db, settings, key, "ann@example.com")),
        "verification link": queued_by(ctx, verification_link),
        "notice": queued_by(ctx, notice),
    }


SUBJECTS = {
    "email code": "Your sign-in code is ",
    "reset link": "Reset your password",
    "verification link": "Verify your email address",
    "notice": "Your password was changed",
}


def delivered_emails(sink: SmtpSink) -> Counter[str]:
    """How many times each queued email arrived, by name."""
    return Counter(
        name
        for received in sink.received
        for name, subject in SUBJECTS.items()
        if str(received.message["Subject"]).startswith(subject)
    )


def dropped_count(channel: str) -> float:
    return REGISTRY.get_sample_value("idp_deliveries_failed_total", {"channel": channel}) or 0.0


@pytest.mark.parametrize(
    ("minutes", "dropped"),
    [
        (4, set()),
        (20, {"email code", "sms code"}),
        (120, {"email code", "sms code", "reset link"}),
    ],
    ids=["past-six-attempts", "past-the-codes", "past-the-reset-link"],
)
def test_an_outage_loses_no_message_while_it_is_useful_and_drops_the_rest_out_loud(
    build: Callable[..., Context], stub: Stub, caplog: pytest.LogCaptureFixture, minutes: int, dropped: set[str]
) -> None:
    """Mail and SMS are down far longer than six attempts took (2.5 minutes): each message is tried
    until it is no longer useful, then dropped with an audit event, an error line and the metric; what
    is still useful when the servers come back arrives exactly once, with two workers racing."""
    sink, controller = smtp_sink()
    proxy = TcpProxy(("127.0.0.1", controller.port))
    proxy.start()
    try:
        settings = {
            "IDP_EMAIL_BACKEND": "smtp",
            "IDP_SMTP_HOST": "127.0.0.1",
            "IDP_SMTP_PORT": str(proxy.port),
            "IDP_SMS_BACKEND": "webhook",
            "IDP_SMS_WEBHOOK_URL": stub.url + "/sms",
        }
        workers = [build(**settings), build(**settings)]
        proxy.stop()
        stub.answers = [Answer(503, {})]
        queued = queue_one_of_each(workers[0])
        before = {channel: dropped_count(channel) for channel in ("email", "sms")}

        with caplog.at_level(logging.INFO):
            run_for(workers, minutes * 60)
            assert sink.received == [], "nothing gets through the outage"
            failed_sms = len(stub.requests)
            assert failed_sms > 6, "the code is tried more than six times"
            proxy.start()
            stub.answers = [Answer(204, None)]
            run_for(workers, 3 * 24 * 3600)
    finally:
        proxy.stop()
        controller.stop()

    kept = set(queued) - dropped
    assert delivered_emails(sink) == Counter(name for name in kept if name != "sms code"), "each once"
    assert len(stub.requests) - failed_sms == (0 if "sms code" in dropped else 1)
    rows = {name: row(workers[0], message_id) for name, message_id in queued.items()}
    assert {name for name, message in rows.items() if message.sent_at is not None} == kept
    assert {name for name, message in rows.items() if message.failed_at is not None} == dropped
    assert all(message.body is None for message in rows.values()), "nothing keeps a code or link"

    with workers[0].db() as db:
        events = list(db.scalars(select(AuditEvent).where(AuditEvent.event == "message_failed")))
    by_id = {event.detail["message_id"]: event for event in events}
    assert set(by_id) == {queued[name] for name in dropped}, "one event per dropped message"
    for name in dropped:
        detail = by_id[queued[name]].detail
        assert detail["reason"] == "expired" and detail["attempts"] > 6
        assert detail["error"] in ("smtp: ConnectionRefusedError", "webhook: HTTP 503")
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert sorted(queued[name] for name in dropped) == sorted(
        message_id for message in errors for message_id in queued.values() if message_id in message
    ), errors
    for channel in ("email", "sms"):
        lost = sum(1 for name in dropped if (name == "sms code") == (channel == "sms"))
        assert dropped_count(channel) - before[channel] == lost
