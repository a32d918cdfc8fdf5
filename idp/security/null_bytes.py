"""Refuses a NUL character in a request's path or query string, before any endpoint sees it.

PostgreSQL can neither store nor compare text holding a NUL, so such a value, looked up or saved
anywhere, failed in the database driver and answered as if the database were down. No URL idp
serves has a reason to carry one. Bodies are checked where they are read (``security.forms`` and
the account API's JSON bodies). The account API answers in its own shape, RFC 9457 problem
details; everything else in RFC 6749's.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..web.json_response import JSONResponse

REFUSAL = {"error": "invalid_request", "error_description": "the request holds a NUL character"}
PROBLEM = {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "The request holds a NUL character."}


def holds_nul(text: str) -> bool:
    return "\x00" in text


class NullBytes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (holds_nul(scope["path"]) or b"%00" in scope["query_string"]):
            if scope["path"].startswith("/api/"):
                response = JSONResponse(
                    PROBLEM,
                    status_code=400,
                    media_type="application/problem+json",
                    headers={"Cache-Control": "no-store"},
                )
            else:
                response = JSONResponse(REFUSAL, status_code=400, headers={"Cache-Control": "no-store"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
