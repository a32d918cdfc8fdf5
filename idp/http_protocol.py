"""uvicorn's HTTP/1.1 protocol (httptools), sending each response's head and body in one write.

uvicorn writes a response's status line and headers as soon as the application starts it, and
its body when the application sends it: two system calls and two TCP segments for an answer that
is nearly always one small body. Under load a worker spent a fifth of its time in those writes,
and an introspection served 5 to 11 % more answers a second with one write instead of two. Here
the head of each response waits for the response's first body write, or for its end when it has
no body (HEAD, 304), or for the connection's close, and goes out with it. Nothing else waits:
an interim ``100 Continue`` is written at once, and the chunks of a streamed body after the first
are written as they come. (A head waits for its body: an application that started a response and
then waited, or read the request's body, would hold its headers back. idp reads every body before
it answers and streams nothing.)

Each request must also arrive whole within :data:`REQUEST_SECONDS` of its first byte (the first
request of a connection, of the connection itself), or it is answered ``408`` and its connection
closed. uvicorn waits for a request's bytes for ever: a few hundred connections that send nothing,
or a request head or body a byte at a time (slowloris), held a worker's connections open at no
cost to their sender. The time an application takes to answer is not counted, nor the time a
request waits behind an earlier one of its connection. A client that takes nothing of a response
for as long (a response that filled the connection's buffer, and the client reads no more) loses
its connection too: the response's task waited on it for ever. The deadline is shorter than the
20 s a stopping worker of ``idp serve --workers N`` is given, so that no slow client holds a stop
up. And the parser keeps a request's head whole until it ends, however long: one connection
sending an endless header grew a worker by 200 MB in 15 s. A head still unfinished when more than
:data:`MAX_HEAD_BYTES` of it has arrived is answered ``431`` and its connection closed (a head
that arrives whole in one read, at most 256 KiB, is the application's to judge). And one read of
small requests sent ahead of their answers queued thousands, 2.4 KB each: past
:data:`MAX_QUEUED`, those queued are answered and the connection closed. Each cut is counted in
``idp_connections_cut_total``.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from .metrics import CONNECTIONS_CUT

REQUEST_SECONDS = 15.0
"""How long a request may take to arrive, and a response to be taken by its client."""
MAX_HEAD_BYTES = 32 * 1024
"""The most a request's line and headers may hold: many times what any page, app or API sends."""
MAX_QUEUED = 100
"""The most requests a connection may send ahead of their answers (HTTP/1.1 pipelining)."""
TOO_SLOW = b"The request did not arrive in time."
TOO_LARGE = b"The request line and headers are too large."


class _QueueFull(Exception):
    pass


class OneWriteHttpProtocol(HttpToolsProtocol):
    _arriving_since: float | None = None
    """While a request is arriving: when its time began (the event loop's clock)."""
    _unread_since: float | None = None
    """While the client takes no more of a response: since when."""
    _head_bytes: int | None = None
    """While a request's head is arriving: how much of it has come (but for the read it began in,
    where an earlier request ended in that read too: requests sent one after another unanswered)."""
    _ended_in_read: bool = False
    _queue_full: bool = False
    _watch: asyncio.TimerHandle | None = None
    """The connection's one timer, due when the earlier of the two times runs out. A timer made
    and cancelled for each request cost about 2 us (uvloop, on a busy 2-core machine), where a
    JWKS request takes 40 to 70 in all."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHeld(transport, self))  # type: ignore[arg-type]
        self._arriving_since = self.loop.time()
        self._watch_until()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Any byte starts the time, not only a request's first: the parser skips the empty lines
        between requests, and each read stops uvicorn's keep-alive timer. A read that leaves a
        head unfinished, and in which no earlier request ended, is all head (the parser keeps a
        head whole until it ends, however long), and counts toward its size. Once the queue is
        full, what comes is dropped unread."""
        if self._queue_full:
            return
        if self._arriving_since is None:
            self._arriving_since = self.loop.time()
        self._ended_in_read = False
        super().data_received(data)
        if self._head_bytes is not None and not self._ended_in_read and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, TOO_LARGE, "head-too-large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._arriving_since is None:
            self._arriving_since = self.loop.time()

    def on_headers_complete(self) -> None:
        """A request past :data:`MAX_QUEUED` stops the parser, and uvicorn goes on through
        :meth:`send_400_response`: each queued request held its scope and state (2.4 KB), and one
        read of small requests queued thousands."""
        self._head_bytes = None
        if len(self.pipeline) >= MAX_QUEUED:
            self._queue_full = True
            raise _QueueFull
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """With the queue full, the requests queued are answered and the connection then closed;
        nothing more is read. No answer is written ahead of theirs."""
        if not self._queue_full:
            super().send_400_response(msg)
            return
        if self.pipeline and self.pipeline[0][0].keep_alive:
            CONNECTIONS_CUT.labels(reason="too-many-queued").inc()
            self.pipeline[0][0].keep_alive = False
        self.flow.pause_reading()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._arriving_since = None
        self._ended_in_read = True

    def on_response_complete(self) -> None:
        """A request that waited behind this response starts its time now."""
        self.transport.flush()  # type: ignore[attr-defined]  # a head still held: a response with no body
        super().on_response_complete()
        if self._arriving_since is not None:
            self._arriving_since = self.loop.time()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._unread_since is None:
            self._unread_since = self.loop.time()

    def resume_writing(self) -> None:
        self._unread_since = None
        super().resume_writing()

    def _watch_until(self) -> None:
        """Wake when the earliest time runs out; with none running, a whole spell from now (a time
        that begins meanwhile runs out later still)."""
        begun = [since for since in (self._arriving_since, self._unread_since) if since is not None]
        due = (min(begun) if begun else self.loop.time()) + REQUEST_SECONDS
        self._watch = self.loop.call_at(due, self._look)

    def _look(self) -> None:
        """A closing connection is watched until what was written to it is taken: a close waits
        for that, and a client that reads nothing would make it wait for ever."""
        self._watch = None
        now = self.loop.time()
        closing = self.transport.is_closing()
        if closing:
            if not self.transport.get_write_buffer_size():
                return
            if self._unread_since is None:
                self._unread_since = now
        if self._unread_since is not None and now - self._unread_since >= REQUEST_SECONDS:
            self._not_read()
            return
        late = self._arriving_since is not None and now - self._arriving_since >= REQUEST_SECONDS
        if late and not closing:
            if self._answering():
                self._arriving_since = now
            else:
                self._refuse(408, TOO_SLOW, "request-late")
        self._watch_until()

    def _answering(self) -> bool:
        """Whether an earlier request of the connection is being answered: reading waits for that
        answer, so the time is not the client's, and it gets another spell."""
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.more_body and not cycle.response_complete)

    def _not_read(self) -> None:
        """The client took nothing of what was written for a whole spell: the connection is
        dropped (a close would wait for the client to take what is written)."""
        CONNECTIONS_CUT.labels(reason="response-unread").inc()
        self.transport.abort()

    def _refuse(self, status: int, message: bytes, reason: str) -> None:
        """Answer the request still arriving with ``status`` and close the connection; when an
        earlier response of the connection is on its way, close it only, so that no answer is
        written into or ahead of another."""
        CONNECTIONS_CUT.labels(reason=reason).inc()
        if not self._answering() and not self._answered_early():
            self.transport.write(_refusal(status, message, self.server_state.default_headers))
        self.transport.close()

    def _answered_early(self) -> bool:
        """Whether the request still arriving has an answer begun or sent already (an application
        that answered before it read the body)."""
        cycle = self.cycle
        return cycle is not None and cycle.more_body and cycle.response_started


def _refusal(status: int, message: bytes, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    head = [STATUS_LINE[status]]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(message),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + message


class _HeadHeld:
    """The connection's transport as its responses see it: the first write of a started response
    (its head) is held and joined to the next write. The protocol and the response are referred
    to weakly, as the protocol refers to this: a closed connection is freed as soon as it is let
    go, not at the cycle collector's next pass."""

    def __init__(self, transport: asyncio.Transport, protocol: HttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = weakref.ref(protocol)
        self._held: bytes | None = None
        self._headed: weakref.ref[RequestResponseCycle] | None = None
        """The response whose head was held last: its later writes are its body."""

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self._is_head():
            self._held = data
            return
        if data:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held head, unless the connection is closing already (the peer reset it): then
        nobody can read it, and the transport would refuse it."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def _is_head(self) -> bool:
        protocol = self._protocol()
        cycle = protocol.cycle if protocol is not None else None
        if cycle is None or not cycle.response_started or cycle.response_complete:
            return False
        if self._headed is not None and self._headed() is cycle:
            return False
        self._headed = weakref.ref(cycle)
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
