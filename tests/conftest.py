"""Shared fixtures: a database (SQLite, or PostgreSQL + Redis when CI asks), the app in-process,
a live ``idp serve`` for real relying-party clients and the browser.

``IDP_TEST_DATABASE_URL`` and ``IDP_TEST_REDIS_URL`` pick the back end; they are separate from
``IDP_DATABASE_URL`` so that running the suite can never wipe a database someone configured for use.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from idp.accounts import users
from idp.accounts.passwords import hash_password
from idp.accounts.users import create_user
from idp.app import create_app
from idp.context import Context
from idp.migrate import upgrade
from idp.oauth.clients import create_client
from idp.settings import Settings

from .flows import RegisteredClient, TestUser

TEST_ISSUER = "http://testserver"
SECRET_KEY = "test-secret-key-" + "x" * 32
PASSWORD = "correct horse battery staple"


# The sockets that keep the ports ``free_port`` gave out from anyone else, open until the run ends.
_RESERVED_PORTS: list[socket.socket] = []


def free_port() -> int:
    """A port of 127.0.0.1 for a server of the test's own, or for an address where nothing listens.

    A port that was merely free when looked at could be handed to another process (CI runs two
    suites side by side) before our server binds it: ours would then fail to start, or worse, our
    readiness check would be answered by theirs. So the port stays bound, with SO_REUSEADDR and
    never listening, for the rest of the run: the kernel then gives it to nobody who asks for a free
    port or connects out, while a server binding it by number with SO_REUSEADDR (uvicorn, gunicorn,
    redis-server, asyncio's and http.server's servers all do) still can, and a connection to it
    while nothing listens is refused as at any closed port.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _RESERVED_PORTS.append(sock)
    return sock.getsockname()[1]


def _reset_postgresql(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from .services import suite_database_url  # imported here: tests.services imports this module

    url = suite_database_url()
    if url:
        _reset_postgresql(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'idp.db'}"
    upgrade(url)
    return url


@pytest.fixture
def own_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own on the suite's back end: ``services.own_database``."""
    from .services import own_database  # imported here: tests.services imports this module

    with own_database(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def module_environ(
    base_environ: dict[str, str],
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, str]]:
    """The shared settings and signing keys (``settings`` makes them), with a migrated database of
    the test module's own, for modules whose apps count lockouts, codes and limits in it."""
    from .services import own_database  # imported here: tests.services imports this module

    with own_database(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])) as url:
        upgrade(url)
        yield {**base_environ, "IDP_DATABASE_URL": url}


@pytest.fixture(scope="session")
def redis_url() -> str | None:
    from .services import suite_redis_url  # imported here: tests.services imports this module

    url = suite_redis_url()
    if url:
        import redis

        redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def base_environ(database_url: str, redis_url: str | None, keys_dir: Path) -> dict[str, str]:
    """The settings every in-process app and every spawned ``idp`` shares, as environment.

    Rate limits are off: the suite signs in and registers from one address far more often than
    a person would. tests/test_rate_limits.py turns them on in apps of its own.
    """
    environ = {
        "IDP_DATABASE_URL": database_url,
        "IDP_KEYS_DIR": str(keys_dir),
        "IDP_SECRET_KEY": SECRET_KEY,
        "IDP_RATE_LIMITING": "off",
    }
    if redis_url:
        environ["IDP_REDIS_URL"] = redis_url
    return environ


def make_settings(base_environ: dict[str, str], **overrides: str) -> Settings:
    return Settings.from_environ({"IDP_ISSUER": TEST_ISSUER, **base_environ, **overrides}, env_file="/nonexistent")


@pytest.fixture(scope="session")
def settings(base_environ: dict[str, str]) -> Settings:
    settings = make_settings(base_environ)
    ctx = Context.build(settings)
    ctx.keystore.ensure()
    ctx.close()
    return settings


@pytest.fixture(scope="session")
def app(settings: Settings):  # type: ignore[no-untyped-def]
    application = create_app(settings)
    yield application
    application.state.ctx.close()


@pytest.fixture(scope="session")
def ctx(app) -> Context:  # type: ignore[no-untyped-def]
    return app.state.ctx


@pytest.fixture
def http(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A browser-like client of the in-process app with its own cookie jar; redirects not followed."""
    with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as client:
        yield client


@pytest.fixture
def make_client(ctx: Context):  # type: ignore[no-untyped-def]
    """Register a client; keyword arguments as ``idp.oauth.clients.create_client``."""

    def make(**kwargs) -> RegisteredClient:  # type: ignore[no-untyped-def]
        kwargs.setdefault("name", "Test app")
        kwargs.setdefault("redirect_uris", ["https://rp.example/cb"])
        kwargs.setdefault("post_logout_redirect_uris", ["https://rp.example/bye"])
        with ctx.db.begin() as db:
            made = create_client(db, ctx.secret_key, allow_http=True, **kwargs)
            return RegisteredClient(
                client_id=made.client.id,
                client_secret=made.secret,
                redirect_uri=made.client.redirect_uris[0] if made.client.redirect_uris else "",
            )

    return make


@functools.cache
def _password_hash(password: str) -> str:
    return hash_password(password)


@contextmanager
def passwords_hashed_once() -> Iterator[None]:
    """While open, ``create_user`` gives everyone with one password the same argon2 hash (the app's
    own parameters), made once a run: hashing was most of the suite's time, and the people tests
    make are not what they test. A sign-in still verifies the hash for real."""
    with mock.patch.object(users, "hash_password", _password_hash):
        yield


@pytest.fixture
def make_user(ctx: Context):  # type: ignore[no-untyped-def]
    """Make a person as ``idp.accounts.users.create_user`` does; the password is hashed once a run."""
    counter = iter(range(1_000_000))

    def make(**kwargs) -> TestUser:  # type: ignore[no-untyped-def]
        kwargs.setdefault("email", f"person{next(counter)}-{os.urandom(4).hex()}@example.com")
        kwargs.setdefault("password", PASSWORD)
        kwargs.setdefault("verified", True)
        with ctx.db.begin() as db, passwords_hashed_once():
            user = create_user(db, **kwargs)
            return TestUser(id=user.id, email=user.email, password=kwargs["password"])

    return make


class LiveServer:
    def __init__(self, url: str, environ: dict[str, str], process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.environ = environ
        self.process = process
        self.log = log

    def idp(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the real ``idp`` console script against the live server's settings."""
        return run_idp(self.environ, *args)


def run_idp(
    environ: dict[str, str], *args: str, check: bool = False, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``input``, when given, is the command's standard input (a pipe); otherwise it inherits the suite's."""
    script = Path(sys.executable).parent / "idp"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")} | environ
    return subprocess.run(
        [str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
        cwd=env.get("HOME", "/"),
        input=input,
    )


def idp_json(environ: dict[str, str], *args: str) -> dict[str, Any]:
    """Run a command of the real CLI that must succeed; the JSON object it printed (empty for none)."""
    result = run_idp(environ, *args)
    assert result.returncode == 0, (args, result.stderr)
    parsed = json.loads(result.stdout) if result.stdout.strip() else {}
    assert isinstance(parsed, dict)
    return parsed


@contextmanager
def serving(environ: dict[str, str], directory: Path, count: int, issuer: str) -> Iterator[list[str]]:
    """``count`` ``idp serve`` processes behind one ``issuer``, as replicas; their URLs."""
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for number in range(count):
            process, url = start_server(environ, directory / f"serve-{number}.log", issuer=issuer)
            processes.append(process)
            urls.append(url)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)


def start_server(
    environ: dict[str, str], log: Path, *extra: str, issuer: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``idp serve`` on a free port, ready; its issuer is its own URL unless several share one ``issuer``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")} | environ | {"IDP_ISSUER": issuer or url}
    handle = log.open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "idp"), "serve", "--port", str(port), *extra],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"idp serve exited: {log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"idp serve did not become ready: {log.read_text()}")


class ServedApp:
    """An ASGI app served by uvicorn in a thread of the test process, on a free port; ``config``
    goes to ``uvicorn.Config`` (``http=OneWriteHttpProtocol``, as ``idp serve`` serves)."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"log_level": "warning", **config}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(base_environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``idp serve`` in its own process on a free port, sharing the test database and keys.

    It delivers no messages: those the in-process app queues are read by the tests that caused
    them, and a second process delivering from the same outbox would take them first.
    """
    log = tmp_path_factory.mktemp("live") / "serve.log"
    process, url = start_server(base_environ | {"IDP_DELIVERY_WORKER": "off"}, log)
    try:
        yield LiveServer(url, base_environ | {"IDP_ISSUER": url}, process, log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Debian's Chromium driven by Playwright. Skipped with a reason where it is missing, never in CI.

    Its profile is a fresh temporary one; its ``HOME`` (where it keeps crash reports and settings
    whatever the profile) is the run's own too, so that runs side by side share no browser file.
    """
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing in CI: .ci/run must install it")
        pytest.skip("Chromium is not installed (apt-get install chromium); browser tests skipped")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=executable,
            env=dict(os.environ) | {"HOME": str(tmp_path_factory.mktemp("chromium-home"))},
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield instance
        instance.close()


CHROME_LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"


@pytest.fixture
def browsers(app) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """Open more browsers (TestClients with their own cookies and User-Agent) on the shared app."""
    with ExitStack() as stack:

        def open_browser(user_agent: str = CHROME_LINUX, application: Any = None) -> TestClient:
            client = TestClient(
                application or app, base_url=TEST_ISSUER, follow_redirects=False, headers={"User-Agent": user_agent}
            )
            return stack.enter_context(client)

        yield open_browser


@pytest.fixture
def mail_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The messages the delivery worker sends, as log records of ``idp.messages``."""
    caplog.set_level(logging.INFO, logger="idp.messages")
    return caplog
