"""OpenID Provider metadata (OIDC Discovery 1.0 §3, RFC 8414) and the JWKS (RFC 7517).

Both are documents that change rarely (the metadata never while a process runs, the JWKS at a key
rotation), asked for often by every relying party and API: each is serialised once, answered as
ready bytes with a strong ``ETag``, and a request that already holds it gets a bodyless 304.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from starlette.requests import Request
from starlette.responses import Response

from ..web.request import context

JWKS_MAX_AGE = 300
METADATA_MAX_AGE = 3600


async def configuration(request: Request) -> Response:
    body = context(request).metadata_json
    return _document(request, _serialised(body), "application/json", METADATA_MAX_AGE)


async def jwks(request: Request) -> Response:
    """Built once per key rotation; served from memory with cache headers."""
    body = context(request).keyring.snapshot().jwks_json
    return _document(request, _serialised(body), "application/jwk-set+json", JWKS_MAX_AGE)


@lru_cache(maxsize=4)
def _serialised(body: bytes) -> tuple[bytes, str]:
    """The body and its ``ETag``, kept for the few bodies a process serves (a ``bytes`` keeps its
    hash, so finding one again costs no hashing of the body)."""
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _document(request: Request, ready: tuple[bytes, str], media_type: str, max_age: int) -> Response:
    body, etag = ready
    headers = {"Cache-Control": f"public, max-age={max_age}", "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
