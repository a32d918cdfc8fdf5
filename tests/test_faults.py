"""A running ``idp serve`` losing Redis or its database, and getting them back without a restart.

Redis holds only what may fall back to one process (rate limits, attempt counters): without it
sign-ins go on, readiness says degraded but stays 200, and an error is logged. Without the database
nothing can be done: every request that needs it answers a quick, clean 503, readiness fails while
liveness holds, and all recovers by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import URL

from idp.context import Context
from idp.housekeeping import run_housekeeping
from idp.messaging.worker import run_worker
from idp.migrate import upgrade
from idp.observability import outages
from idp.security.rate_limits import KEY_PREFIX, REDIS_RETRY
from idp.settings import Settings
from idp.storage import make_engine
from idp.storage.database import CONNECT_TIMEOUT, PING_AFTER_IDLE_SECONDS, POSTGRESQL_CONNECT_ARGS

from .conftest import PASSWORD, SECRET_KEY, idp_json, start_server
from .flows import RegisteredClient, authorize_params, eventually, hidden_fields, pkce_pair, tokens_for
from .flows import TestUser as Person
from .services import RedisServer, TcpProxy, postgresql_database

REDIRECT_URI = "https://rp.example/cb"
QUICK = 3.0
PREFLIGHT = {"Access-Control-Request-Method": "POST"}


class Instance:
    def __init__(self, environ: dict[str, str], url: str, log: Path) -> None:
        self.environ = environ
        self.url = url
        self.log = log

    def web(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30)

    def idp(self, *args: str) -> dict[str, Any]:
        return idp_json(self.environ, *args)

    def client(self) -> RegisteredClient:
        made = self.idp("clients", "create", "--name", "Relying app", "--redirect-uri", REDIRECT_URI)
        return RegisteredClient(made["client_id"], made["client_secret"], REDIRECT_URI)

    def person(self) -> Person:
        email = f"fault-{secrets.token_hex(4)}@example.com"
        made = self.idp("users", "create", "--email", email, "--password", PASSWORD, "--verified")
        return Person(made["id"], email, PASSWORD)

    def readiness(self) -> tuple[int, dict[str, Any]]:
        response = httpx.get(self.url + "/readyz", timeout=30)
        return response.status_code, response.json()


@pytest.fixture(scope="module")
def database_url() -> Iterator[URL]:
    with postgresql_database() as url:
        yield url


@pytest.fixture
def serve(database_url: URL, tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    """Start ``idp serve`` on the test's database with ``overrides`` to the environment."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(database: URL = database_url, **overrides: str) -> Instance:
        environ = {
            "IDP_DATABASE_URL": database.render_as_string(hide_password=False),
            "IDP_KEYS_DIR": str(tmp_path / "keys"),
            "IDP_SECRET_KEY": SECRET_KEY,
            "HOME": str(tmp_path),
            **overrides,
        }
        log = tmp_path / "serve.log"
        process, url = start_server(environ, log)
        processes.append(process)
        return Instance(environ | {"IDP_ISSUER": url}, url, log)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=15)


def refresh(web: httpx.Client, client: RegisteredClient, token: str) -> httpx.Response:
    return web.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=client.auth)


# -- Redis -----------------------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def redis_fallbacks(instance: Instance) -> float:
    text = httpx.get(instance.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "idp_redis_fallbacks":
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    raise AssertionError("idp_redis_fallbacks_total is not exported")


def test_without_redis_sign_in_works_readiness_is_degraded_and_recovers(serve, redis_server):
    instance = serve(IDP_REDIS_URL=redis_server.url)
    client, person = instance.client(), instance.person()
    assert instance.readiness() == (200, {"status": "ready", "checks": {"database": "ok", "redis": "ok"}})
    fallbacks = redis_fallbacks(instance)

    redis_server.kill()

    assert instance.readiness() == (200, {"status": "degraded", "checks": {"database": "ok", "redis": "unavailable"}})
    with instance.web() as web:
        started = time.monotonic()
        tokens = tokens_for(web, client, person)
        assert time.monotonic() - started < 10
        assert web.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 200
        assert refresh(web, client, tokens["refresh_token"]).status_code == 200
    fell_back_at = time.monotonic()
    assert redis_fallbacks(instance) > fallbacks
    errors = [
        line
        for line in instance.log.read_text().splitlines()
        if re.search("redis", line, re.I) and re.search("unavailable|unreachable", line, re.I)
    ]
    assert errors, instance.log.read_text()
    assert "Traceback" not in instance.log.read_text()

    redis_server.start()

    assert eventually(lambda: instance.readiness()[1]["status"] == "ready", 10), instance.readiness()
    assert instance.readiness()[1]["checks"] == {"database": "ok", "redis": "ok"}
    time.sleep(max(0.0, fell_back_at + REDIS_RETRY - time.monotonic()))
    with instance.web() as web:
        tokens_for(web, client, person)
    counted = redis.Redis.from_url(redis_server.url).keys(KEY_PREFIX + "*")
    assert counted, "rate limits are counted in Redis again once it is back"


# -- the database --------------------------------------------------------------------------------


@pytest.fixture
def proxy(database_url: URL) -> Iterator[TcpProxy]:
    """The only way from ``idp serve`` to PostgreSQL, so that a test can cut it."""
    forwarder = TcpProxy((database_url.host or "127.0.0.1", database_url.port or 5432))
    forwarder.start()
    yield forwarder
    forwarder.stop()


def assert_clean_503(response: httpx.Response, elapsed: float, bound: float = QUICK) -> None:
    request = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == 503, (request, response.status_code, response.text)
    assert elapsed < bound, f"{request} took {elapsed:.1f} s"
    content_type = response.headers["content-type"]
    assert content_type.startswith(("application/json", "text/html")), (request, content_type)
    assert "Traceback" not in response.text and "sqlalchemy" not in response.text.lower(), response.text
    assert response.headers.get("retry-after"), request


def timed(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def test_without_the_database_requests_answer_503_quickly_and_recover(serve, proxy, database_url):
    instance = serve(database_url.set(host="127.0.0.1", port=proxy.port))
    client, person = instance.client(), instance.person()
    with instance.web() as web:
        tokens = tokens_for(web, client, person)
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        challenge = pkce_pair()[1]
        login_form = hidden_fields(web.get("/login").text)
        needs_the_database: list[Callable[[], httpx.Response]] = [
            lambda: web.get("/authorize", params=authorize_params(client, challenge)),
            lambda: web.post("/login", data={**login_form, "username": person.email, "password": PASSWORD}),
            lambda: refresh(web, client, tokens["refresh_token"]),
            lambda: web.post("/introspect", data={"token": tokens["refresh_token"]}, auth=client.auth),
            lambda: web.get("/userinfo", headers=bearer),
            lambda: web.get("/userinfo", headers={**bearer, "Origin": "https://app.example"}),
            lambda: web.options("/token", headers={"Origin": "https://app.example", **PREFLIGHT}),
            lambda: web.post("/token", data={"client_id": client.client_id}, headers={"Origin": "https://app.example"}),
            lambda: web.get("/account"),
        ]

        proxy.stop()

        for send in needs_the_database:
            assert_clean_503(*timed(send))
        status, body = instance.readiness()
        assert (status, body["status"], body["checks"]["database"]) == (503, "unavailable", "unavailable")
        assert web.get("/healthz").status_code == 200

        proxy.start()

        assert eventually(lambda: instance.readiness()[0] == 200, 10), instance.readiness()
        assert web.get("/account").status_code == 200
        refreshed = refresh(web, client, tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        tokens = refreshed.json()

        proxy.stall()

        assert_clean_503(*timed(lambda: refresh(web, client, tokens["refresh_token"])), bound=CONNECT_TIMEOUT + 3)

        proxy.stop()
        proxy.start()

        assert eventually(lambda: instance.readiness()[0] == 200, 10), instance.readiness()
        assert refresh(web, client, tokens["refresh_token"]).status_code == 200
    with instance.web() as web:
        tokens_for(web, client, person)


# -- a server that vanishes without a word -------------------------------------------------------

# Each libpq keyword of ours and the socket option libpq sets from it.
SOCKET_OPTIONS = {
    "keepalives": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "keepalives_idle": (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "keepalives_interval": (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    "keepalives_count": (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    "tcp_user_timeout": (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
}


@pytest.mark.parametrize("in_url", [{}, {"keepalives_idle": "7", "connect_timeout": "5"}], ids=["defaults", "url"])
def test_the_kernel_watches_every_postgresql_connection(database_url, in_url):
    """A server gone without a RST (a dropped route, a dead host) sends no error to read: only TCP
    keepalives on an idle connection, and the user timeout on one awaiting an answer, end it.

    Read back from the connection libpq really opened, and from its socket; what the URL sets wins.
    """
    expected = {key: str(value) for key, value in POSTGRESQL_CONNECT_ARGS.items()} | in_url
    engine = make_engine(database_url.update_query_dict(in_url).render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            libpq = connection.connection.driver_connection
            parameters = libpq.info.get_parameters()
            with socket.socket(fileno=os.dup(libpq.pgconn.socket)) as sock:
                options = {key: sock.getsockopt(*option) for key, option in SOCKET_OPTIONS.items()}
    finally:
        engine.dispose()
    assert {key: parameters.get(key) for key in expected} == expected
    assert options == {key: int(expected[key]) for key in SOCKET_OPTIONS}


# -- pooled connections -------------------------------------------------------------------------


def test_a_pooled_connection_is_pinged_only_after_it_was_idle(database_url, monkeypatch):
    """Under load every connection goes back to work at once: asking the server first would be a
    round trip of its own for each transaction. One idle for longer is asked."""
    engine = make_engine(database_url.render_as_string(hide_password=False))
    pings: list[object] = []
    ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda connection: pings.append(connection) or ping(connection))
    try:
        for _ in range(3):
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 1")).scalar_one() == 1
        assert pings == []
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_a_pooled_connection_that_died_while_idle_is_replaced_before_it_is_used(database_url, proxy):
    """The server restarted while the pool was idle (after an outage, a quiet night): the first
    request after finds its connection dead before it uses it, and gets a live one."""
    engine = make_engine(database_url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    try:
        with engine.connect() as first, engine.connect() as second:  # two in the pool
            assert first.execute(text("SELECT 1")).scalar_one() == second.execute(text("SELECT 1")).scalar_one()
        proxy.stop()
        proxy.start()
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        for _ in range(2):
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


# -- the background loops while the database is down --------------------------------------------

REMINDER = 0.5


async def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _through_an_outage(
    loop: Callable[..., Awaitable[None]], ctx: Context, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Run ``loop`` every 20 ms: up, down for four reminder periods, up until it says so."""
    stop = asyncio.Event()
    running = asyncio.create_task(loop(ctx, stop, interval=0.02))
    try:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(proxy.stop)
        await asyncio.sleep(4 * REMINDER)
        await asyncio.to_thread(proxy.start)
        await _wait_for(lambda: any("recovered" in record.getMessage() for record in caplog.records), 10)
    finally:
        stop.set()
        await running


@pytest.mark.parametrize(
    ("loop", "logger", "task"),
    [(run_worker, "idp.outbox", "outbox worker"), (run_housekeeping, "idp.housekeeping", "housekeeping")],
    ids=["worker", "housekeeping"],
)
def test_a_background_loop_logs_an_outage_once_and_its_end(
    loop, logger, task, database_url, proxy, tmp_path, caplog, monkeypatch
):
    """Round after round fails while the database is away: one error with the traceback, a one-line
    reminder at most every ``REMINDER_SECONDS``, and one line when it is back."""
    monkeypatch.setattr(outages, "REMINDER_SECONDS", REMINDER)
    caplog.set_level(logging.INFO)
    upgrade(database_url.render_as_string(hide_password=False))
    through_proxy = database_url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    environ = {"IDP_DATABASE_URL": through_proxy, "IDP_KEYS_DIR": str(tmp_path), "IDP_SECRET_KEY": SECRET_KEY}
    ctx = Context.build(Settings.from_environ(environ, env_file="/nonexistent"))
    try:
        # A thread of its own: the session's Playwright browser keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _through_an_outage(loop, ctx, proxy, caplog)).result()
    finally:
        ctx.close()

    ours = [record for record in caplog.records if record.name == logger and record.getMessage().startswith(task)]
    assert [record.levelname for record in ours] == ["ERROR", *["WARNING"] * (len(ours) - 2), "INFO"], caplog.text
    assert f"{task} recovered after " in ours[-1].getMessage()
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert tracebacks == ours[:1], caplog.text
    failing = [record.created for record in ours[:-1]]
    assert len(failing) >= 3, "four reminder periods of outage bring reminders"
    assert all(later - earlier >= REMINDER - 0.05 for earlier, later in pairwise(failing)), caplog.text
