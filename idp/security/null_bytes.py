"""Refuses a NUL character in a request's path or query string, before any endpoint sees it.

PostgreSQL can neither store nor compare text holding a NUL, so such a value, looked up or saved
anywhere, failed in the database driver and answered as if the database were down. No URL idp
serves has a reason to carry one. Bodies are checked where they are read (``security.forms`` and
the account API's JSON bodies). The account API answers in its own shape, RFC 9457 problem
details; everything else in RFC 6749's.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from ..web.json_response import JSONResponse

REFUSAL = {"error": "invalid_request", "error_description": "the request holds a NUL character"}
PROBLEM = {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "The request holds a NUL character."}


def holds_nul(text: str) -> bool:
    return "\x00" in text


def refusal(scope: Scope) -> Response | None:
    """The answer to a request whose path or query string holds a NUL, or ``None``."""
    if not holds_nul(scope["path"]) and b"%00" not in scope["query_string"]:
        return None
    if scope["path"].startswith("/api/"):
        return JSONResponse(
            PROBLEM, status_code=400, media_type="application/problem+json", headers={"Cache-Control": "no-store"}
        )
    return JSONResponse(REFUSAL, status_code=400, headers={"Cache-Control": "no-store"})
