"""uvicorn's HTTP/1.1 protocol (httptools), sending each response's head and body in one write.

uvicorn writes a response's status line and headers as soon as the application starts it, and
its body when the application sends it: two system calls and two TCP segments for an answer that
is nearly always one small body. Under load a worker spent a fifth of its time in those writes,
and an introspection served 5 to 11 % more answers a second with one write instead of two. Here
the head of each response waits for the response's first body write, or for its end when it has
no body (HEAD, 304), or for the connection's close, and goes out with it. Nothing else waits:
an interim ``100 Continue`` is written at once, and the chunks of a streamed body after the first
are written as they come.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class OneWriteHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHeld(transport, self))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.write(b"")  # a head still held: a response with no body
        super().on_response_complete()


class _HeadHeld:
    """The connection's transport as its responses see it: the first write of a started response
    (its head) is held and joined to the next write."""

    def __init__(self, transport: asyncio.Transport, protocol: HttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held: bytes | None = None
        self._headed: RequestResponseCycle | None = None
        """The response whose head was held last: its later writes are its body."""

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self._is_head():
            self._held = data
            return
        if data:
            self._transport.write(data)

    def close(self) -> None:
        self.write(b"")
        self._transport.close()

    def _is_head(self) -> bool:
        cycle = self._protocol.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete or cycle is self._headed:
            return False
        self._headed = cycle
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
