"""Real back ends a test owns: a PostgreSQL database of its own, ``redis-server`` processes, and a
TCP proxy in front of PostgreSQL that can be cut and restored.

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
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import URL, make_url

from .conftest import free_port

LOCAL_POSTGRESQL = "postgresql+psycopg://postgres@127.0.0.1:5432/"


def unavailable(reason: str) -> None:
    """Skip where a back end is missing on a developer's machine; CI must have every one."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


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
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)],
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
