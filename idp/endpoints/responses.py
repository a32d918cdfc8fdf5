"""JSON answers of the protocol endpoints: never cached (RFC 6749 §5.1), errors per §5.2."""

from __future__ import annotations

from typing import Any

from ..oauth.errors import InvalidClient, OAuthError, TemporarilyUnavailable
from ..web.json_response import JSONResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(body: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, headers=NO_STORE)


def oauth_error(error: OAuthError) -> JSONResponse:
    response = json_response(error.body(), status_code=error.status_code)
    if isinstance(error, InvalidClient) and error.used_basic:
        response.headers["WWW-Authenticate"] = 'Basic realm="idp", charset="UTF-8"'
    if isinstance(error, TemporarilyUnavailable):
        response.headers["Retry-After"] = str(error.retry_after)
    return response
