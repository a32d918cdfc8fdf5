"""Real back ends a test owns: a PostgreSQL database of its own, ``redis-server`` processes, a
TCP proxy in front of PostgreSQL that can be cut and restored, an SMTP server that keeps what it
receives, an ``idp serve`` mailing to it, HTTP servers that stand in for a provider's API, and the
app itself in-process on settings of the test's choosing.

The tests of several instances and of faults run on PostgreSQL and Redis whatever back end the rest
of the suite uses. They never touch the suite's shared database or Redis: they create a database on
the same server (that of ``IDP_TEST_DATABASE_URL``, else the local one) and drop it afterwards, and
start their own ``redis-server`` on free ports. Where PostgreSQL or ``redis-server`` is missing they
are skipped with the reason, except in CI, where that is a failure.

Tests that only need a database of their own take it from ``own_database``: on whichever back end
the suite runs, so that their journeys run on PostgreSQL too in CI's PostgreSQL pass.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from aiosmtpd.controller import Controller
from sqlalchemy.engine import URL, make_url
from starlette.testclient import TestClient

from idp.app import create_app
from idp.context import Context

from .conftest import TEST_ISSUER, LiveServer, free_port, make_settings, start_server

LOCAL_POSTGRESQL = "postgresql+psycopg://postgres@127.0.0.1:5432/"


def unavailable(reason: str) -> None:
    """Skip where a back end is missing on a developer's machine; CI must have every one."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _xdist_worker() -> int:
    """Which of ``pytest -n N``'s workers this process is: 0 for the first, and without workers."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def suite_database_url() -> str | None:
    """``IDP_TEST_DATABASE_URL``; for the second and later workers of ``pytest -n N``, a database
    of each one's own beside it on the same server (``<name>_gw1``, ...), made when missing."""
    url = os.environ.get("IDP_TEST_DATABASE_URL")
    worker = _xdist_worker()
    if not url or worker == 0:
        return url
    given = make_url(url)
    name = f"{given.database}_gw{worker}"
    with psycopg.connect(_libpq(given.set(database="postgres")), autocommit=True, connect_timeout=3) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            connection.execute(f'CREATE DATABASE "{name}"')
    return given.set(database=name).render_as_string(hide_password=False)


def suite_redis_url() -> str | None:
    """``IDP_TEST_REDIS_URL``; for worker N of ``pytest -n``, the Redis database N below it (CI's
    15 gives 15, 14, ...), so that no worker's counts or flush reach another's."""
    url = os.environ.get("IDP_TEST_REDIS_URL")
    worker = _xdist_worker()
    if not url or worker == 0:
        return url
    parts = urlsplit(url)
    number = int(parts.path.strip("/") or "0") - worker
    if number < 0:
        raise pytest.UsageError(f"IDP_TEST_REDIS_URL: no Redis database {number} for worker gw{worker}")
    return urlunsplit(parts._replace(path=f"/{number}"))


@contextlib.contextmanager
def postgresql_database() -> Iterator[URL]:
    """A fresh, empty database on the test PostgreSQL server, dropped afterwards."""
    server = make_url(os.environ.get("IDP_TEST_DATABASE_URL") or LOCAL_POSTGRESQL)
    admin = _libpq(server.set(database="postgres"))
    name = f"idp_scale_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {server.host}:{server.port or 5432} is unreachable: {exc}".strip())
    try:
        yield server.set(drivername="postgresql+psycopg", database=name)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def own_database(directory: Path) -> Iterator[str]:
    """An empty database of the caller's own on the suite's back end, as a URL.

    Tests that need a database no other app delivers messages from (or whose tables they read
    whole) still run on PostgreSQL in CI's PostgreSQL pass: a fresh database on the server of
    ``IDP_TEST_DATABASE_URL``, dropped afterwards; without it, a SQLite file in ``directory``.
    """
    if not os.environ.get("IDP_TEST_DATABASE_URL"):
        yield f"sqlite:///{directory / 'idp.db'}"
        return
    with postgresql_database() as url:
        yield url.render_as_string(hide_password=False)


@contextlib.contextmanager
def running_app(environ: dict[str, str], *, peer: str = "testclient", **overrides: str) -> Iterator[TestClient]:
    """A browser-like client from ``peer`` of an app with these settings, its lifespan (and so its
    delivery worker) running; redirects are not followed. A test that counts limits per address
    gives a ``peer`` of its own: with Redis the counts outlive the app, and other tests spend theirs."""
    app = create_app(make_settings(environ, **overrides))
    try:
        with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False, client=(peer, 50000)) as client:
            yield client
    finally:
        app.state.ctx.close()


class RedisServer:
    """A ``redis-server`` of the test's own that can be killed and restarted on the same port."""

    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            unavailable("redis-server is not installed (apt-get install redis-server)")
        self.executable = str(executable)
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # A socket's path has at most 107 bytes, which a test's own directory may not leave.
        self.socket = Path(tempfile.mkdtemp(prefix="redis-")) / "redis.sock"
        self.socket_url = f"unix://{self.socket}?db=0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                str(self.socket),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    client.close()
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    def kill(self) -> None:
        """Gone at once, as a crashed or partitioned Redis is: no goodbye to its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class TcpProxy:
    """Forwards a local port to ``target`` until stopped; stopping drops every connection through it.

    ``stop()`` makes the target unreachable (connections refused); ``stall()`` makes it a black hole
    (connections accepted, never answered), as a server that hangs or a dropped route looks.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._forwarding = True

    def start(self) -> None:
        self._forwarding = True
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._acceptor = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._acceptor.start()

    def stop(self) -> None:
        """Refuse connections from now on; the port is free again when this returns."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
            self._acceptor = None
        self._drop_connections()

    def stall(self) -> None:
        """Keep accepting, forward nothing, and cut what was open."""
        self._forwarding = False
        self._drop_connections()

    def _drop_connections(self) -> None:
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while listener.fileno() != -1:
            try:
                downstream, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            downstream.settimeout(None)
            with self._lock:
                self._open.add(downstream)
            if not self._forwarding:
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.add(upstream)
            threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._open.discard(source)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None


class SmtpSink:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login if session.authenticated else None
        tls = session.ssl is not None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, tls, login))
        return "250 OK"

    def wait_for(self, to: str, subject_starts: str, seconds: float = 20) -> EmailMessage:
        """The last email to ``to`` whose subject starts so, waiting for a server's worker to send it."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = [
                r.message
                for r in list(self.received)
                if to in r.rcpt_tos and str(r.message["Subject"]).startswith(subject_starts)
            ]
            if found:
                return found[-1]
            time.sleep(0.05)
        subjects = [r.message["Subject"] for r in self.received]
        raise AssertionError(f"no email {subject_starts!r}... to {to}; got {subjects}")


def smtp_sink(**kwargs: Any) -> tuple[SmtpSink, Controller]:
    """An SMTP server on a free port of 127.0.0.1 (``kwargs`` go to aiosmtpd's ``Controller``: TLS,
    AUTH); the caller stops the controller."""
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return sink, controller


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return body.get_content()


@dataclass
class MailingServer:
    live: LiveServer
    ctx: Context
    sink: SmtpSink


@contextlib.contextmanager
def mailing_server(environ: dict[str, str], log: Path) -> Iterator[MailingServer]:
    """``idp serve`` with ``environ`` sending email over real SMTP to a sink, and a context on its
    database, so that a test reads the messages the server's own delivery worker sent."""
    sink, controller = smtp_sink()
    try:
        environ = environ | {
            "IDP_EMAIL_BACKEND": "smtp",
            "IDP_SMTP_HOST": "127.0.0.1",
            "IDP_SMTP_PORT": str(controller.port),
        }
        process, url = start_server(environ, log)
        live = LiveServer(url, environ | {"IDP_ISSUER": url}, process, log)
        ctx = Context.build(make_settings(live.environ))
        try:
            yield MailingServer(live, ctx, sink)
        finally:
            ctx.close()
            process.terminate()
            process.wait(timeout=15)
    finally:
        controller.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """A stub's request handler: one call answers, and nothing is printed over the test output."""

    def respond(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` serving on a free port of 127.0.0.1 from a thread of its own; its origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
