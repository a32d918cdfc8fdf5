"""Public documents answered before the application routes a request.

Discovery and the JWKS are what relying parties and APIs ask for most, and their answer depends on
nobody: ready bytes with a strong ``ETag``, and a bodyless 304 for a request that already holds
them. As the innermost middleware, :class:`PublicDocuments` answers a GET or HEAD of their paths
with headers built once per document body, without the router, the request and response objects
or a CORS middleware wrapping the answer: a quarter of what such a request cost. The request id,
the access line, the metrics and the security headers are the edge's (:mod:`idp.web.edge`), as
for any request. Any other method of these paths goes to Starlette's ``CORSMiddleware`` for any origin:
a CORS preflight is answered there, anything else with 405 (with the CORS headers any answer to
another origin gets). A path with a trailing slash is not one of theirs: 404, where the router
used to redirect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

from starlette.types import ASGIApp, Receive, Scope, Send

from ..context import Context
from .cors import PUBLIC_METHODS, AnyOrigin, method_not_allowed

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Document:
    """A document at a path: its current body (from the process's services), type and freshness."""

    body: Callable[[Context], bytes]
    media_type: str
    max_age: int


@dataclass(frozen=True)
class _Ready:
    body: bytes
    etag: bytes
    ok: Headers
    not_modified: Headers


@lru_cache(maxsize=8)
def _ready(body: bytes, media_type: str, max_age: int) -> _Ready:
    """The answers of one body, kept for the few bodies a process serves (a ``bytes`` keeps its
    hash, so finding one again costs no hashing of the body)."""
    etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
    freshness = [(b"cache-control", b"public, max-age=%d" % max_age), (b"etag", etag), (b"vary", b"Origin")]
    ok = [*freshness, (b"content-length", b"%d" % len(body)), (b"content-type", media_type.encode())]
    return _Ready(body, etag, ok, freshness)


_ANY_ORIGIN = (b"access-control-allow-origin", b"*")


class PublicDocuments:
    def __init__(self, app: ASGIApp, *, documents: Mapping[str, Document]) -> None:
        self.app = app
        self.documents = documents
        self.other_methods = AnyOrigin(method_not_allowed((*PUBLIC_METHODS, "OPTIONS")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        document = self.documents.get(scope["path"]) if scope["type"] == "http" else None
        if document is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in PUBLIC_METHODS:
            await self.other_methods(scope, receive, send)
            return
        ctx = cast(Context, scope["app"].state.ctx)
        ready = _ready(document.body(ctx), document.media_type, document.max_age)
        held = b""
        from_page = False
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                held = value
            elif name == b"origin":
                from_page = True
        if ready.etag in held:
            status, headers, body = 304, ready.not_modified, b""
        else:
            status, headers, body = 200, ready.ok, ready.body if scope["method"] == "GET" else b""
        headers = [*headers, _ANY_ORIGIN] if from_page else list(headers)  # outer layers add to it
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
