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
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class OneWriteHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHeld(transport, self))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]  # a head still held: a response with no body
        super().on_response_complete()


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
