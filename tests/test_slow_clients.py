"""Clients that hang up half-way, send slowly or send a head without end cost the server nothing
it keeps.

A client that closes its connection before its request's body is whole is answered 408 (to
nobody) and logged as such, never as a 500 with a traceback; a request that does not arrive whole
in time is answered 408 and its connection closed (idp.http_protocol), however little it sent; a
request head (its line and headers) still unfinished when more than the protocol keeps of it has
arrived is answered 431 and its connection closed. The deadline is made short here; the served
protocol and the sockets are real.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from idp import http_protocol
from idp.http_protocol import OneWriteHttpProtocol

from .conftest import ServedApp, start_server
from .test_no_secrets import json_lines

DEADLINE = 1.0
HALF_A_FORM = (
    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    "Content-Length: 1000\r\n\r\ngrant_type=client_cre"
)


def test_a_client_hanging_up_mid_body_is_answered_408_and_never_an_error(base_environ, tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_server(base_environ, log)
    paths = ["/token", "/login", "/userinfo", "/authorize", "/register"]
    try:
        port = int(url.rsplit(":", 1)[1])
        for path in paths:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(HALF_A_FORM.format(path=path).encode())
                time.sleep(0.2)
        deadline = time.monotonic() + 15
        while len(_access_lines(log)) < len(paths) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert sorted((line["route"], line["status"]) for line in _access_lines(log)) == sorted(
        (path, 408) for path in paths
    )
    text = log.read_text()
    assert "Exception in ASGI application" not in text and "Traceback" not in text


def _access_lines(log: Path) -> list[dict[str, Any]]:
    lines = json_lines(log.read_text())
    return [line for line in lines if line.get("logger") == "idp.access" and line["route"] != "/readyz"]


class Recorded:
    """An application that reads each request's body whole, as idp's do, then answers; it notes
    what each request's receive gave it last."""

    def __init__(self, answer_after: float = 0.0) -> None:
        self.answer_after = answer_after
        self.body = b"ok"
        self.ends: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        self.ends.append(message["type"])
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(self.answer_after)
        headers = [(b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def served(recorded: Recorded, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[ServedApp]:
    """``request.param``, when a test gives one, is more of uvicorn's configuration."""
    monkeypatch.setattr(http_protocol, "REQUEST_SECONDS", DEADLINE)
    config = getattr(request, "param", {})
    with ServedApp(recorded, http=OneWriteHttpProtocol, lifespan="off", **config) as served:
        yield served


def connect(served: ServedApp) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=10)


def received_until_closed(conn: socket.socket) -> tuple[bytes, float]:
    """Everything the server sent until it closed the connection, and how long that took."""
    began, received = time.monotonic(), b""
    while chunk := conn.recv(65536):
        received += chunk
    return received, time.monotonic() - began


def statuses(received: bytes) -> list[bytes]:
    """The status of each response in ``received`` (a body here never holds a status line)."""
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", received)


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nab"],
    ids=["nothing", "half-a-head", "half-a-body"],
)
def test_a_request_that_does_not_arrive_in_time_is_answered_408_and_its_connection_closed(served, recorded, sent):
    with connect(served) as conn:
        conn.sendall(sent)
        received, waited = received_until_closed(conn)
    assert statuses(received) == [b"408"]
    assert b"connection: close" in received.lower()
    assert received.endswith(http_protocol.TOO_SLOW)
    assert DEADLINE * 0.9 <= waited < DEADLINE + 5
    time.sleep(0.1)
    assert recorded.ends == (["http.disconnect"] if b"POST" in sent else [])


def test_the_deadline_is_each_requests_not_the_connections(served, recorded):
    with connect(served) as conn:
        conn.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(conn.recv(65536)) == [b"200"]
        time.sleep(DEADLINE * 2)
        conn.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n")
        time.sleep(DEADLINE / 2)
        conn.sendall(b"\r\n")
        assert statuses(conn.recv(65536)) == [b"200"]
    assert recorded.ends == ["http.request", "http.request"]


def test_empty_lines_between_requests_do_not_hold_a_connection_open(served):
    with connect(served) as conn:
        conn.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(conn.recv(65536)) == [b"200"]
        conn.settimeout(DEADLINE / 3)
        received = b""
        for _ in range(12):
            try:
                conn.sendall(b"\r\n")
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    assert statuses(received) == [b"408"]


@pytest.mark.parametrize("served", [{}, {"timeout_keep_alive": DEADLINE / 5}], indirect=True, ids=["", "keep-alive"])
@pytest.mark.parametrize("connection", [b"", b"Connection: close\r\n"], ids=["open", "close"])
def test_a_client_that_takes_nothing_of_a_response_loses_its_connection(served, recorded, connection):
    """Also once the connection is closing, after its response (``Connection: close``) or when it
    has been idle for uvicorn's keep-alive time: a close waits for the client to take what was
    written."""
    recorded.body = b"x" * 32_000_000
    before = _cut("response-unread")
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.settimeout(10)
    with conn:
        conn.connect(("127.0.0.1", served.port))
        conn.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n" + connection + b"\r\n")
        deadline = time.monotonic() + 2 * DEADLINE + 5
        while _cut("response-unread") == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cut("response-unread") == before + 1
        taken = 0
        try:
            while chunk := conn.recv(1_000_000):
                taken += len(chunk)
        except ConnectionResetError:
            pass
    assert taken < len(recorded.body)


def _cut(reason: str) -> float:
    return REGISTRY.get_sample_value("idp_connections_cut_total", {"reason": reason}) or 0.0


def test_the_time_the_application_takes_to_answer_is_not_counted(served, recorded):
    recorded.answer_after = DEADLINE * 3
    with connect(served) as conn:
        conn.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab")
        received, _ = received_until_closed(conn)
    assert statuses(received) == [b"200"] and received.endswith(b"ok")


def test_a_request_arriving_behind_one_being_answered_waits_for_that_answer(served, recorded):
    recorded.answer_after = DEADLINE * 3
    with connect(served) as conn:
        conn.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n")
        received, waited = received_until_closed(conn)
    assert statuses(received) == [b"200", b"408"]
    assert received.index(b"ok") < received.index(b"HTTP/1.1 408")
    assert waited >= DEADLINE * 3


def test_a_request_behind_one_being_answered_starts_its_time_when_that_answer_is_sent(served, recorded):
    recorded.answer_after = DEADLINE * 2.6
    with connect(served) as conn:
        conn.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /next HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n"
        )
        received = b""
        while b"100 Continue" not in received:
            received += conn.recv(65536)
        time.sleep(DEADLINE / 2)
        conn.sendall(b"ab")
        rest, _ = received_until_closed(conn)
    assert statuses(received + rest) == [b"200", b"100", b"200"]


def test_a_request_head_without_end_is_refused_431_before_it_is_kept(served, recorded):
    before = _cut("head-too-large")
    with connect(served) as conn:
        conn.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Long: ")
        sent = 0
        try:
            while sent < 50 * http_protocol.MAX_HEAD_BYTES:
                time.sleep(0.001)
                conn.sendall(b"a" * 1024)
                sent += 1024
        except OSError:
            pass
        received, _ = received_until_closed(conn)
    assert statuses(received) == [b"431"]
    assert b"connection: close" in received.lower()
    assert sent < 10 * http_protocol.MAX_HEAD_BYTES
    assert _cut("head-too-large") == before + 1
    assert recorded.ends == []


@pytest.mark.parametrize("pieces", [1, 8])
def test_a_large_head_within_the_limit_and_a_body_past_it_are_served(served, recorded, pieces):
    head = b"POST /a HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * (http_protocol.MAX_HEAD_BYTES - 200) + b"\r\n"
    body = b"b" * (4 * http_protocol.MAX_HEAD_BYTES)
    request = head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    size = -(-len(request) // pieces)
    with connect(served) as conn:
        for start in range(0, len(request), size):
            conn.sendall(request[start : start + size])
            time.sleep(0.01)
        received, _ = received_until_closed(conn)
    assert statuses(received) == [b"200"]
    assert recorded.ends == ["http.request"]


def test_requests_sent_ahead_are_answered_in_order_up_to_a_limit(served, recorded):
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(http_protocol.MAX_QUEUED))
    with connect(served) as conn:
        conn.sendall(requests + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received, _ = received_until_closed(conn)
    assert statuses(received) == [b"200"] * (http_protocol.MAX_QUEUED + 1)


def test_a_connection_queueing_more_requests_than_that_has_those_answered_then_is_closed(served, recorded):
    before = _cut("too-many-queued")
    requests = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * (20 * http_protocol.MAX_QUEUED)
    with connect(served) as conn:
        conn.sendall(requests)
        received, _ = received_until_closed(conn)
    assert statuses(received) == [b"200"] * (http_protocol.MAX_QUEUED + 1)
    assert len(recorded.ends) == http_protocol.MAX_QUEUED + 1
    assert _cut("too-many-queued") == before + 1
