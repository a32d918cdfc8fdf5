"""Per request: a request id, one access line, and the request metrics (:class:`~idp.web.edge.Edge`
begins and ends each request's :class:`Observed`).

The request id is the caller's ``X-Request-ID`` when it is short and plain (so a load balancer's
id ties our lines to its own), otherwise a new one; either way it is sent back in the response.
The access line and the metrics name the route's template (``/account/sessions/{session_id}/end``),
never the path itself, and never the query string or the body: authorization requests carry
``state``, callbacks carry codes, and reset links carry tokens.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from contextvars import Token
from dataclasses import dataclass

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Scope

from ..metrics import LATENCY, REQUESTS
from ..security.client_address import Network, client_address
from .logs import REQUEST_ID, AccessRecord

UNMATCHED = "(unmatched)"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
access_log = logging.getLogger("idp.access")


class RequestIds:
    """Fresh request ids: a random prefix per process and a counter, unique across processes
    without a call to the system's random source per request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"

    def from_header(self, header: str | None) -> str:
        """The caller's id when it is safe to log and echo, else a fresh one."""
        if header is not None and _REQUEST_ID.fullmatch(header):
            return header
        return self.new()


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


@dataclass(frozen=True)
class _Series:
    requests: Counter
    latency: Histogram

    def observe(self, elapsed: float) -> None:
        self.requests.inc()
        self.latency.observe(elapsed)


@dataclass
class Observed:
    """One request being served, as its access line and metrics will name it."""

    request: Request
    request_id: str
    route: str
    method: str
    started: float
    token: Token[str | None]
    status: int = 500
    """What the client gets when the application fails before it answers, until it answers."""


class RequestObservability:
    """The route of a path without parameters is found once per process and kept, so that most
    requests are not routed twice; a path with parameters (or none known) is routed each time,
    so that no path a caller makes up is kept."""

    def __init__(self, *, trusted_proxies: Sequence[Network], static_routes: Iterable[str]) -> None:
        self.trusted_proxies = trusted_proxies
        self.ids = RequestIds()
        self._static_routes: dict[str, str] = {path: path for path in static_routes}
        """Known from the start: the paths answered before the router (``static_routes``)."""
        self._series: dict[tuple[str, str, int], _Series] = {}

    def _metrics(self, route: str, method: str, status: int) -> _Series:
        """The metric series of one kind of answer, looked up by label once per process (routes
        are templates, methods and statuses few: the set is bounded)."""
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            requests = REQUESTS.labels(route=route, method=method, status=str(status))
            series = _Series(requests, LATENCY.labels(route=route))
            self._series[key] = series
        return series

    def _route(self, scope: Scope) -> str:
        path = scope["path"]
        found = self._static_routes.get(path)
        if found is None:
            found = route_template(scope["app"].routes, scope)
            if found == path:
                self._static_routes[path] = found
        return found

    def begin(self, scope: Scope) -> Observed:
        """A request of ``scope`` (HTTP) begins: its id is set for the lines logged while it is served."""
        request = Request(scope)
        request_id = self.ids.from_header(request.headers.get("x-request-id"))
        method = request.method if request.method in METHODS else "OTHER"
        route = self._route(scope)
        return Observed(request, request_id, route, method, time.perf_counter(), REQUEST_ID.set(request_id))

    def end(self, observed: Observed) -> None:
        """The request ended, answered with ``observed.status``: its metrics and its access line."""
        elapsed = time.perf_counter() - observed.started
        self._metrics(observed.route, observed.method, observed.status).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            fields = {
                "method": observed.method,
                "route": observed.route,
                "status": observed.status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": client_address(observed.request, self.trusted_proxies),
            }
            message = f"{observed.method} {observed.route} {observed.status}"
            access_log.handle(AccessRecord(access_log.name, message, fields))
        REQUEST_ID.reset(observed.token)
