"""Which pages of other origins may read the provider's answers: CORS (the Fetch standard, §3.2).

Discovery and the JWKS are public documents any page may read (:class:`AnyOrigin`: Starlette's
``CORSMiddleware`` for every origin, GET and HEAD; :mod:`idp.web.documents` serves them).

The endpoints a browser app calls with its tokens (:func:`client_route`: token, revocation,
UserInfo) answer only an origin that the request's client registered (``--web-origin``), with
``Access-Control-Allow-Origin`` naming that origin and ``Vary: Origin``:

- the client is the one the request names in ``client_id`` (token, revocation), or the one its
  access token was issued to (UserInfo): the endpoint's surface notes it with :func:`note_client`
  as soon as it reads it, and the answer is checked against it, errors included, so that the app
  can read why it was refused;
- a request whose client cannot be told (a malformed form, a token that cannot be verified, a
  ``client_id`` nobody registered) is answered for an origin that any client registered: such an
  answer is an error that is the same for everyone and names no client;
- a preflight carries no body, so no client either: it is answered for an origin that any client
  registered, as node oidc-provider answers preflights before it knows the client; the request
  that follows is then checked against its own client;
- an origin that is not allowed gets no CORS header: the request is served as before, and the
  browser keeps the answer from the page.

No ``Access-Control-Allow-Credentials``: these endpoints read no cookie. The decision is the
database's, each time: which origins a client registered is a column of its row.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..oauth.clients import any_client_registers_origin, registered_origins
from .pipeline import Endpoint
from .request import context

MAX_AGE = 600
"""Seconds a browser may keep a preflight's answer (Chromium keeps it at most 7200)."""
ALLOWED_HEADERS = ("Authorization", "Content-Type")
"""Request headers a browser app may send beyond the safelisted ones: a bearer token or client
credentials, and a form body. (The provider takes no DPoP proofs, so no ``DPoP`` header.)"""
EXPOSED_HEADERS = ("Retry-After", "WWW-Authenticate")
"""Response headers an app may read beyond the safelisted ones: a bearer challenge, a wait."""
PUBLIC_METHODS = ("GET", "HEAD")
_CLIENT = "idp.cors.client"


def client_route(path: str, endpoint: Endpoint, methods: Sequence[str]) -> Route:
    """``endpoint`` readable from the origins its request's client registered; its surface calls
    :func:`note_client`."""
    return Route(
        path, endpoint, methods=[*methods, "OPTIONS"], middleware=[Middleware(ClientOrigins, methods=tuple(methods))]
    )


def note_client(request: Request, client_id: str | None) -> None:
    """The client a request is for, as soon as the surface reads it (not yet authenticated)."""
    request.scope[_CLIENT] = client_id


def _is_preflight(headers: Headers) -> bool:
    return "origin" in headers and "access-control-request-method" in headers


def method_not_allowed(methods: Sequence[str]) -> Response:
    """An OPTIONS that is no preflight is refused as every other method the resource does not
    serve (RFC 9110 §15.5.6): OPTIONS is there only for browsers' preflights."""
    return PlainTextResponse("Method Not Allowed", status_code=405, headers={"Allow": ", ".join(methods)})


class AnyOrigin(CORSMiddleware):
    """Starlette's CORS for every origin, GET and HEAD, in front of what answers them."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app, allow_origins=("*",), allow_methods=PUBLIC_METHODS, max_age=MAX_AGE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and not _is_preflight(Headers(scope=scope)):
            await method_not_allowed(PUBLIC_METHODS)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class ClientOrigins:
    """The CORS of an endpoint that answers only the origins of its request's client.

    Starlette's ``CORSMiddleware`` decides from a list fixed when it is built; here the list is
    the client's row, known only once the surface has read the request, so the decision is taken
    once the endpoint has answered. The answer (a small JSON document) is held until then, so that
    a database that fails the decision fails the request as it fails any other: a clean 503 from
    the application's handler, not an answer already half sent.
    """

    def __init__(self, app: ASGIApp, methods: tuple[str, ...]) -> None:
        self.app = app
        self.methods = methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        origin = request.headers.get("origin")
        if request.method == "OPTIONS":
            await (await self._options(request))(scope, receive, send)
            return
        if origin is None:
            await self.app(scope, receive, send)
            return

        answer: list[Message] = []

        async def keep(message: Message) -> None:
            answer.append(message)

        await self.app(scope, receive, keep)
        headers = MutableHeaders(scope=answer[0])
        headers.add_vary_header("Origin")
        if await run_in_threadpool(_allowed, request, origin, scope.get(_CLIENT)):
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        for message in answer:
            await send(message)

    async def _options(self, request: Request) -> Response:
        if not _is_preflight(request.headers):
            return method_not_allowed(self.methods)
        origin = request.headers["origin"]
        if not await run_in_threadpool(_allowed, request, origin, None):
            return PlainTextResponse("Disallowed CORS origin", status_code=400, headers={"Vary": "Origin"})
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(self.methods),
                "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
                "Access-Control-Max-Age": str(MAX_AGE),
                "Vary": "Origin",
            },
        )


def _allowed(request: Request, origin: str, client_id: str | None) -> bool:
    """Whether ``origin`` may read the answer to a request for ``client_id`` (see the module)."""
    with context(request).db() as db:
        return _registered(db, origin, client_id)


def _registered(db: Session, origin: str, client_id: str | None) -> bool:
    origins = registered_origins(db, client_id) if client_id is not None else None
    if origins is None:
        return any_client_registers_origin(db, origin)
    return origin in origins
