"""With ``IDP_METRICS_PORT`` set, ``/metrics`` answers on that port only, and that port answers
nothing else.

The port a load balancer or ingress routes to then never shows the metrics, whatever the proxy in
front allows: hiding one path at the proxy depends on features some controllers turn off. Both
ports are served by the same processes, so with ``--workers N`` the metrics are still summed over
the workers; a connection's port is the local port of its socket, which a client cannot choose.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse, Response
from starlette.types import Scope

METRICS_PATH = "/metrics"


def misdirected(scope: Scope, port: int | None) -> Response | None:
    """The 404 of ``/metrics`` asked on another port than ``port``, or of another path on it;
    ``None`` for any request when no metrics port is set."""
    if port is None:
        return None
    server = scope.get("server")
    on_metrics_port = server is not None and server[1] == port
    if on_metrics_port == (scope["path"] == METRICS_PATH):
        return None
    return PlainTextResponse("Not Found", status_code=404)
