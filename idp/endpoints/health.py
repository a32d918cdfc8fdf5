"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..web.json_response import JSONResponse
from ..web.request import context

log = logging.getLogger("idp.health")


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    return await run_in_threadpool(_readyz, request)


def _readyz(request: Request) -> Response:
    """Ready while the database answers; degraded, but still ready, while only Redis is down.

    Every replica shares the same Redis: were its loss to fail readiness, one Redis outage would take
    every replica out of the load balancer, although sign-ins keep working on in-process counters.
    Without the database nothing works, so that alone makes a replica not ready.
    """
    ctx = context(request)
    checks: dict[str, str] = {}
    try:
        with ctx.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.error("readiness: database unavailable: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    if ctx.redis is not None:
        try:
            ctx.redis.sync.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means degraded
            log.error("readiness: redis unavailable: %s", type(exc).__name__)
            checks["redis"] = "unavailable"
    if checks["database"] != "ok":
        status, code = "unavailable", 503
    elif any(value != "ok" for value in checks.values()):
        status, code = "degraded", 200
    else:
        status, code = "ready", 200
    return JSONResponse({"status": status, "checks": checks}, status_code=code, headers={"Cache-Control": "no-store"})
