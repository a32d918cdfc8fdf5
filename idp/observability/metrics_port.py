"""With ``IDP_METRICS_PORT`` set, ``/metrics`` answers on that port only, and that port answers
nothing else.

The port a load balancer or ingress routes to then never shows the metrics, whatever the proxy in
front allows: hiding one path at the proxy depends on features some controllers turn off. Both
ports are served by the same processes, so with ``--workers N`` the metrics are still summed over
the workers; a connection's port is the local port of its socket, which a client cannot choose.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

METRICS_PATH = "/metrics"


class MetricsPort:
    def __init__(self, app: ASGIApp, *, port: int | None) -> None:
        self.app = app
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.port is not None and scope["type"] == "http":
            server = scope.get("server")
            on_metrics_port = server is not None and server[1] == self.port
            if on_metrics_port != (scope["path"] == METRICS_PATH):
                await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)
