"""Each response's head and body leave in one write (idp.http_protocol), and nothing waits that a
client waits for: an interim 100 Continue, the chunks of a streamed body, a response with no body.

The protocol is uvicorn's own, driven here as the event loop drives it (``connection_made``,
``data_received``) with a transport that records each write, since a client cannot see how the
server's bytes were split into system calls. The last test sends a real ``idp serve`` pipelined
requests over one socket.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from idp.http_protocol import OneWriteHttpProtocol

from .conftest import start_server
from .event_loops import run_apart

App = Callable[[Any, Any, Any], Awaitable[None]]


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        if self.closed:
            raise RuntimeError("the handler is closed")  # as uvloop's transport answers
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(app: App) -> tuple[OneWriteHttpProtocol, RecordingTransport]:
    """A connection to ``app`` as uvicorn's server makes one, inside a running event loop."""
    config = Config(app=app, http=OneWriteHttpProtocol, lifespan="off", log_config=None)
    config.load()
    protocol = OneWriteHttpProtocol(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def until(done: Callable[[], bool]) -> None:
    for _ in range(200):
        if done():
            return
        await asyncio.sleep(0.01)


async def exchange(app: App, raw: bytes, settle: Callable[[RecordingTransport], bool]) -> RecordingTransport:
    protocol, transport = connect(app)
    protocol.data_received(raw)
    await until(lambda: settle(transport))
    protocol.connection_lost(None)
    return transport


def answer(body: bytes, status: int = 200) -> App:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"%d" % len(body))]}
        )
        await send({"type": "http.response.body", "body": body})

    return app


def test_a_response_is_one_write_of_head_and_body():
    transport = run_apart(
        exchange(answer(b'{"ok":true}'), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda t: bool(t.writes))
    )
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b'{"ok":true}'


def test_a_response_without_a_body_is_written_when_it_ends():
    """HEAD and 304 send no body bytes: the held head must still go out."""
    head_only = run_apart(
        exchange(answer(b"0123456789"), b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", lambda t: bool(t.writes))
    )
    assert len(head_only.writes) == 1
    assert head_only.writes[0].startswith(b"HTTP/1.1 200 OK") and head_only.writes[0].endswith(b"\r\n\r\n")
    not_modified = run_apart(exchange(answer(b"", 304), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", lambda t: bool(t.writes)))
    assert [w[:22] for w in not_modified.writes] == [b"HTTP/1.1 304 Not Modif"]


def test_the_chunks_of_a_streamed_body_are_not_held():
    """The head goes with the first chunk; a later chunk is written before the application goes
    on, so a slow stream reaches its client as it is produced."""
    seen: list[int] = []
    transport_of: list[RecordingTransport] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two", "more_body": True})
        await asyncio.sleep(0.05)
        seen.append(len(transport_of[0].writes))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def run() -> RecordingTransport:
        protocol, transport = connect(app)
        transport_of.append(transport)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: bool(seen) and len(transport.writes) == 3)
        return transport

    transport = run_apart(run())
    assert seen == [2], "the second chunk was written while the application paused"
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK") and transport.writes[0].endswith(b"3\r\none\r\n")
    assert transport.writes[1:] == [b"3\r\ntwo\r\n", b"0\r\n\r\n"]


def test_an_interim_100_continue_is_written_before_the_body_is_read():
    order: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        order.append("reads the body")
        message = await receive()
        order.append(f"got {message['body']!r}")
        await answer(b"done")(scope, receive, send)

    async def run() -> RecordingTransport:
        protocol, transport = connect(app)
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        await until(lambda: bool(transport.writes))
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"], "the client is told to send its body"
        protocol.data_received(b"hi")
        await until(lambda: len(transport.writes) == 2)
        return transport

    transport = run_apart(run())
    assert order == ["reads the body", "got b'hi'"]
    assert len(transport.writes) == 2 and transport.writes[1].endswith(b"\r\n\r\ndone")


def test_a_response_that_closes_its_connection_is_written_before_the_close():
    transport = run_apart(
        exchange(answer(b"bye"), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", lambda t: t.closed)
    )
    assert transport.closed and len(transport.writes) == 1 and transport.writes[0].endswith(b"\r\n\r\nbye")


def test_a_closed_connection_is_freed_without_the_cycle_collector():
    async def run() -> weakref.ref[OneWriteHttpProtocol]:
        protocol, transport = connect(answer(b"x"))
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: bool(transport.writes))
        protocol.connection_lost(None)
        await asyncio.sleep(0.01)
        return weakref.ref(protocol)

    gc.disable()
    try:
        gone = run_apart(run())
        assert gone() is None
    finally:
        gc.enable()


def test_a_head_held_when_the_peer_resets_is_dropped_not_written_to_the_closed_transport():
    failures: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.05)
        raise RuntimeError("the application fails after its peer has gone")

    async def run() -> RecordingTransport:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: failures.append(context))
        protocol, transport = connect(app)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.01)
        transport.closed = True  # the event loop closed it as the reset came
        protocol.connection_lost(ConnectionResetError())
        await asyncio.sleep(0.1)
        return transport

    transport = run_apart(run())
    assert transport.writes == [] and failures == []


def test_idp_serve_answers_pipelined_requests_in_order(base_environ, tmp_path):
    process, url = start_server(base_environ, tmp_path / "serve.log")
    try:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /jwks.json HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
    finally:
        process.terminate()
        process.wait(timeout=10)
    statuses = [line for line in received.split(b"\r\n") if b"HTTP/1.1 " in line]
    assert [line[line.index(b"HTTP/1.1 ") :][:12] for line in statuses] == [
        b"HTTP/1.1 200",
        b"HTTP/1.1 200",
        b"HTTP/1.1 404",
        b"HTTP/1.1 200",
    ]
    assert b'{"status":"ok"}' in received
    assert json.loads(received.rpartition(b"\r\n\r\n")[2])["status"] == "ready"
