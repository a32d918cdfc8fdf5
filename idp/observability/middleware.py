"""Per request: a request id, one access line, and the request metrics, as a pure ASGI middleware.

The request id is the caller's ``X-Request-ID`` when it is short and plain (so a load balancer's
id ties our lines to its own), otherwise a new one; either way it is sent back in the response.
The access line and the metrics name the route's template (``/account/sessions/{session_id}/end``),
never the path itself, and never the query string or the body: authorization requests carry
``state``, callbacks carry codes, and reset links carry tokens.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import LATENCY, REQUESTS
from ..security.client_address import Network, client_address
from .logs import REQUEST_ID

UNMATCHED = "(unmatched)"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
access_log = logging.getLogger("idp.access")


def request_id_from(header: str | None) -> str:
    """The caller's id when it is safe to log and echo, else a fresh one."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route the router will pick: the first full match, else the first partial
    one (a known path asked with the wrong method). Unknown paths share one label, so scanners
    cannot grow the metrics without bound."""
    partial = None
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.NONE:
            continue
        template = _template(route, {**scope, **child_scope})
        if match is Match.FULL:
            return template
        partial = partial or template
    return partial or UNMATCHED


def _template(route: BaseRoute, scope: Scope) -> str:
    """A mounted router's routes are named in full (``/api/account/sessions/{session_id}``)."""
    if isinstance(route, Mount) and route.routes:
        inner = route_template(route.routes, scope)
        return UNMATCHED if inner == UNMATCHED else route.path + inner
    return route.path_format  # type: ignore[attr-defined, no-any-return]


class RequestObservability:
    def __init__(self, app: ASGIApp, *, trusted_proxies: Sequence[Network]) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request_id = request_id_from(request.headers.get("x-request-id"))
        route = route_template(scope["app"].routes, scope)
        method = request.method if request.method in METHODS else "OTHER"
        status = 500  # what the client gets when the application fails before it answers
        started = time.perf_counter()
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            REQUESTS.labels(route=route, method=method, status=str(status)).inc()
            LATENCY.labels(route=route).observe(elapsed)
            access_log.info(
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": client_address(request, self.trusted_proxies),
                },
            )
            REQUEST_ID.reset(token)
