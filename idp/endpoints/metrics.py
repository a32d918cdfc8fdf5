"""``GET /metrics``: the counters of :mod:`idp.metrics` in the Prometheus text format.

Under ``idp serve --workers N`` every worker is a process with counters of its own; there
``idp serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, each worker's
prometheus_client writes its values to files there, and whichever worker answers sums them all.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response


def _registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    combined = CollectorRegistry()
    MultiProcessCollector(combined)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
    return combined


async def metrics(_request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, _registry())
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
