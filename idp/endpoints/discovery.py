"""OpenID Provider metadata (OIDC Discovery 1.0 §3, RFC 8414) and the JWKS (RFC 7517)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..web.request import context

JWKS_MAX_AGE = 300


async def configuration(request: Request) -> Response:
    return JSONResponse(context(request).metadata, headers={"Cache-Control": "public, max-age=3600"})


async def jwks(request: Request) -> Response:
    """Built once per key rotation; served from memory with cache headers."""
    snapshot = context(request).keyring.snapshot()
    return Response(
        snapshot.jwks_json,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
    )
