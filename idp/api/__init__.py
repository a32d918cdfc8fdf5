"""JSON APIs for programs that hold a person's access token, answering errors as RFC 9457 problems.

Everything under ``/api`` is one mount with its own exception handling, so that every error it
answers, the router's 404 and 405 too, is ``application/problem+json``; errors of the rest of the
provider keep their own shapes (RFC 6749 JSON, pages).
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Mount, Route

from . import account, openapi
from .problems import HANDLERS

PREFIX = "/api"


def mount() -> Mount:
    return Mount(
        PREFIX,
        routes=[*account.ROUTES, Route(openapi.PATH, openapi.openapi, methods=["GET"])],
        middleware=[Middleware(ExceptionMiddleware, handlers=HANDLERS)],
    )
