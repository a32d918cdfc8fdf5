"""What every HTTP request passes through first and last, in one layer.

A request is observed (its id, its access line, its metrics), refused at once if its path or
query holds a NUL or it asks for ``/metrics`` on the wrong port, and its answer carries the
security headers and the request id, a 500 for an error included (Starlette's own 500 is sent
outside every middleware, without them; the error's traceback, which the server logs once the
request is over, names the request id). Each of these was a middleware of its own, each a coroutine
every request went through, two of them wrapping ``send``. Here they are one layer, and each
concept stays in its module. Driven in one process, a JWKS request went from 15.4 to 14.7 us
(median of five alternating runs): the layers were cheap, the access line is most of the rest."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..observability.metrics_port import misdirected
from ..observability.requests import RequestObservability
from ..security import null_bytes
from ..security.client_address import Network
from ..security.headers import SecurityHeaders


class Edge:
    """Made where Starlette builds its middleware, at a process's first request: in each worker
    of ``idp serve --workers N``, after the fork, so that each makes request ids of its own."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: Sequence[Network],
        static_routes: Iterable[str],
        https: bool,
        metrics_port: int | None,
    ) -> None:
        self.app = app
        self.observability = RequestObservability(trusted_proxies=trusted_proxies, static_routes=static_routes)
        self.security_headers = SecurityHeaders(https=https)
        self.metrics_port = metrics_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observed = self.observability.begin(scope)
        request_id = (b"x-request-id", observed.request_id.encode())
        started = False

        async def send_stamped(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                observed.status = message["status"]
                message["headers"] = [*self.security_headers.added_to(message.get("headers", ())), request_id]
            await send(message)

        try:
            refusal = self._refusal(scope)
            await (self.app if refusal is None else refusal)(scope, receive, send_stamped)
        except Exception as error:
            error.add_note(f"request_id: {observed.request_id}")
            if not started:
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send_stamped)
            raise
        finally:
            self.observability.end(observed)

    def _refusal(self, scope: Scope) -> Response | None:
        refusal = null_bytes.refusal(scope)
        return misdirected(scope, self.metrics_port) if refusal is None else refusal
