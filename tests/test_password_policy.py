"""The password policy: through ``set_password`` (every way a password is set) and through ``/register``.

The Pwned Passwords check runs against a local stub of the range API that records every request,
so the test can see that only a five-character SHA-1 prefix ever leaves the machine.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.password_policy import PasswordRejected, set_password
from idp.accounts.users import create_user
from idp.app import create_app
from idp.context import Context
from idp.settings import Settings
from idp.storage import PasswordHistory, User

from .conftest import TEST_ISSUER, free_port, make_settings
from .flows import hidden_fields
from .refusals import refused_saying
from .services import QuietHandler, http_server

BREACHED = "Tr0ub4dor&3-breached"
CLEAN = "a clean and rather long passphrase"


def fresh_email() -> str:
    return f"policy-{secrets.token_hex(4)}@example.com"


@pytest.fixture
def new_user(ctx: Context) -> Callable[[], str]:
    """An account without a password yet, as registration makes it; returns its id."""

    def make() -> str:
        with ctx.db.begin() as db:
            return create_user(db, email=fresh_email()).id

    return make


def set_for(ctx: Context, settings: Settings, user_id: str, password: str) -> None:
    with ctx.db.begin() as db:
        user = db.get(User, user_id)
        assert user is not None
        set_password(db, settings, user, password)


def stored_hash(ctx: Context, user_id: str) -> str:
    with ctx.db() as db:
        user = db.get(User, user_id)
        assert user is not None and user.password_hash is not None
        return user.password_hash


def register(client: TestClient, email: str, password: str) -> httpx.Response:
    fields = hidden_fields(client.get("/register").text)
    return client.post("/register", data={**fields, "email": email, "password": password, "password_confirm": password})


def alert(response: httpx.Response) -> str:
    start = response.text.index('role="alert">') + len('role="alert">')
    return response.text[start : response.text.index("<", start)]


# --- set_password -------------------------------------------------------------------------------


def test_shorter_than_the_configured_minimum_is_refused(
    ctx: Context, base_environ: dict[str, str], new_user: Callable[[], str]
) -> None:
    settings = make_settings(base_environ, IDP_PASSWORD_MIN_LENGTH="12")
    user_id = new_user()
    with refused_saying(PasswordRejected, r"^Use at least 12 characters\.$"):
        set_for(ctx, settings, user_id, "elevenchars")
    set_for(ctx, settings, user_id, "twelve chars")


def test_longer_than_256_is_refused(ctx: Context, settings: Settings, new_user: Callable[[], str]) -> None:
    user_id = new_user()
    with refused_saying(PasswordRejected, r"^Use at most 256 characters\.$"):
        set_for(ctx, settings, user_id, "x" * 200 + "y" * 57)
    set_for(ctx, settings, user_id, "x" * 200 + "y" * 56)


@pytest.mark.parametrize("password", ["password1", "qwerty123", "PASSWORD1", "iloveyou"])
def test_common_passwords_are_refused(
    ctx: Context, settings: Settings, new_user: Callable[[], str], password: str
) -> None:
    with refused_saying(PasswordRejected, "too common"):
        set_for(ctx, settings, new_user(), password)


def test_the_email_address_is_refused(ctx: Context, settings: Settings) -> None:
    email = fresh_email()
    with ctx.db.begin() as db:
        user_id = create_user(db, email=email).id
    with refused_saying(PasswordRejected, "cannot be your email address"):
        set_for(ctx, settings, user_id, email.upper())


def test_the_last_five_passwords_are_refused_and_the_sixth_ago_allowed(
    ctx: Context, settings: Settings, new_user: Callable[[], str]
) -> None:
    user_id = new_user()
    passwords = [f"history passphrase number {n}" for n in range(1, 7)]
    for password in passwords:
        set_for(ctx, settings, user_id, password)
    for recent in passwords[1:]:
        with refused_saying(PasswordRejected, "last 5 passwords"):
            set_for(ctx, settings, user_id, recent)
    set_for(ctx, settings, user_id, passwords[0])
    with ctx.db() as db:
        kept = list(db.scalars(select(PasswordHistory.password_hash).where(PasswordHistory.user_id == user_id)))
    assert len(kept) == 5


def test_the_hash_is_argon2id(ctx: Context, settings: Settings, new_user: Callable[[], str]) -> None:
    user_id = new_user()
    set_for(ctx, settings, user_id, CLEAN)
    stored = stored_hash(ctx, user_id)
    assert stored.startswith("$argon2id$v=19$")
    assert PasswordHasher(type=Type.ID).verify(stored, CLEAN)
    with ctx.db() as db:
        (kept,) = db.scalars(select(PasswordHistory.password_hash).where(PasswordHistory.user_id == user_id))
    assert kept == stored


# --- through /register --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("seven77", "Use at least 8 characters."),
        ("x" * 257, "Use at most 256 characters."),
        ("password1", "This password is too common. Choose one that is harder to guess."),
        ("qwerty123", "This password is too common. Choose one that is harder to guess."),
        ("{email}", "Your password cannot be your email address."),
    ],
)
def test_registration_applies_the_policy(http: TestClient, ctx: Context, password: str, message: str) -> None:
    email = fresh_email()
    response = register(http, email, password.format(email=email))
    assert response.status_code == 400
    assert alert(response) == message
    with ctx.db() as db:
        assert db.scalar(select(User).where(User.email == email)) is None


def test_registration_uses_the_configured_minimum(base_environ: dict[str, str], ctx: Context) -> None:
    client = TestClient(
        create_app(make_settings(base_environ, IDP_PASSWORD_MIN_LENGTH="12")),
        base_url=TEST_ISSUER,
        follow_redirects=False,
    )
    try:
        response = register(client, fresh_email(), "elevenchars")
        assert response.status_code == 400 and alert(response) == "Use at least 12 characters."
        email = fresh_email()
        assert register(client, email, "twelve chars").status_code == 200
    finally:
        client.app.state.ctx.close()  # type: ignore[attr-defined]
    with ctx.db() as db:
        user = db.scalar(select(User).where(User.email == email))
        assert user is not None and user.password_hash is not None and user.password_hash.startswith("$argon2id$")


# --- Pwned Passwords ----------------------------------------------------------------------------


@dataclass
class RangeApi:
    """A stub of ``GET /range/{prefix}``: answers with padded suffixes, ``BREACHED``'s among them."""

    url: str = ""
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)


@pytest.fixture
def range_api() -> Iterator[RangeApi]:
    state = RangeApi()
    digest = hashlib.sha1(BREACHED.encode()).hexdigest().upper()

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.seen.append((self.path, str(self.headers), body))
            lines = ["0" * 35 + ":0", "F" * 35 + ":0"]
            if self.path == f"/range/{digest[:5]}":
                lines.insert(1, f"{digest[5:]}:52579")
            self.respond(200, "\r\n".join(lines).encode(), "text/plain")

    with http_server(Handler) as url:
        state.url = url
        yield state


@pytest.fixture
def pwned_client(base_environ: dict[str, str]) -> Iterator[Callable[[str], TestClient]]:
    made: list[TestClient] = []

    def make(api: str) -> TestClient:
        app = create_app(make_settings(base_environ, IDP_PWNED_PASSWORDS="on", IDP_PWNED_PASSWORDS_API=api))
        made.append(TestClient(app, base_url=TEST_ISSUER, follow_redirects=False))
        return made[-1]

    yield make
    for client in made:
        client.app.state.ctx.close()  # type: ignore[attr-defined]


def test_a_breached_password_is_refused_and_only_a_hash_prefix_leaves(
    pwned_client: Callable[[str], TestClient], range_api: RangeApi
) -> None:
    client = pwned_client(range_api.url)
    response = register(client, fresh_email(), BREACHED)
    assert response.status_code == 400
    assert alert(response) == "This password has appeared in a data breach. Choose another one."
    assert register(client, fresh_email(), CLEAN).status_code == 200

    assert len(range_api.seen) == 2
    for password, (path, headers, body) in zip((BREACHED, CLEAN), range_api.seen, strict=True):
        digest = hashlib.sha1(password.encode()).hexdigest().upper()
        assert path == f"/range/{digest[:5]}"
        sent = f"{path}\n{headers}\n{body.decode()}"
        for secret in (password, digest, digest.lower(), digest[5:], digest[5:].lower()):
            assert secret not in sent
        assert "Add-Padding: true" in headers


def test_set_password_checks_the_range_api_when_on(
    ctx: Context, base_environ: dict[str, str], range_api: RangeApi, new_user: Callable[[], str]
) -> None:
    on = make_settings(base_environ, IDP_PWNED_PASSWORDS="on", IDP_PWNED_PASSWORDS_API=range_api.url)
    off = make_settings(base_environ, IDP_PWNED_PASSWORDS_API=range_api.url)
    user_id = new_user()
    with refused_saying(PasswordRejected, "data breach"):
        set_for(ctx, on, user_id, BREACHED)
    set_for(ctx, off, user_id, BREACHED)
    assert len(range_api.seen) == 1, "off means no request at all"


def test_an_unreachable_range_api_lets_the_password_through_with_a_warning(
    pwned_client: Callable[[str], TestClient], ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    client = pwned_client(f"http://127.0.0.1:{free_port()}")
    email = fresh_email()
    with caplog.at_level(logging.WARNING, logger="idp.passwords"):
        response = register(client, email, BREACHED)
    assert response.status_code == 200
    warnings = [r for r in caplog.records if r.name == "idp.passwords" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("pwned passwords check skipped")
    assert BREACHED not in caplog.text
    with ctx.db() as db:
        assert db.scalar(select(User).where(User.email == email)) is not None
