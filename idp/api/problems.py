"""RFC 9457 problem details: the one shape every error of the JSON APIs takes.

Each kind of problem the API can answer has a name; its ``type`` is ``{issuer}/problems/<name>``,
so that a client can tell problems apart without parsing the human ``detail``. Errors that the
router itself answers (no such path, method not allowed) carry ``about:blank`` with the HTTP
status phrase as title, as RFC 9457 §4.2.1 says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..accounts.errors import AccountError
from ..web.json_response import JSONResponse
from ..web.messages import message
from ..web.request import context

log = logging.getLogger("idp")

MEDIA_TYPE = "application/problem+json"
DATABASE_RETRY_AFTER = 5
ROUTER_DETAILS = {404: "There is nothing at this path.", 405: "This path does not take this method."}


@dataclass(frozen=True)
class Kind:
    status: int
    title: str


KINDS = {
    "invalid-token": Kind(401, "The access token is missing, invalid, expired or revoked"),
    "no-person": Kind(403, "The access token does not act for a person"),
    "insufficient-scope": Kind(403, "The access token lacks a scope this API needs"),
    "not-first-party": Kind(403, "The access token was issued to an application that may not manage accounts"),
    "malformed-body": Kind(400, "The request body is not valid JSON"),
    "body-too-large": Kind(413, "The request body is too large"),
    "unsupported-media-type": Kind(415, "The request body must be application/json"),
    "invalid-body": Kind(422, "The request body does not match the operation's schema"),
    "invalid-name": Kind(422, "The name cannot be used"),
    "invalid-language": Kind(422, "The language is not a BCP 47 language tag"),
    "invalid-username": Kind(422, "The username cannot be used"),
    "username-taken": Kind(409, "Another person has this username"),
    "unknown-time-zone": Kind(422, "The time zone is not an IANA time zone"),
    "invalid-picture": Kind(422, "The picture is not an https URL"),
    "invalid-address": Kind(422, "The address cannot be used"),
    "wrong-password": Kind(403, "The current password is not right"),
    "account-locked": Kind(403, "Wrong passwords locked the account for a while"),
    "password-rejected": Kind(422, "The new password is refused by the password policy"),
    "invalid-phone": Kind(422, "The phone number cannot be used"),
    "phone-unavailable": Kind(409, "The phone number belongs to another account"),
    "no-pending-phone": Kind(409, "No phone number is waiting for verification"),
    "wrong-code": Kind(422, "The code is not right, or it has expired"),
    "too-many-codes": Kind(429, "Too many codes were sent to this number or address lately"),
    "invalid-email": Kind(422, "The email address cannot be used"),
    "sign-in-required": Kind(403, "The person must sign in again first"),
    "too-many-emails": Kind(429, "Too many links were asked for this address lately"),
    "no-phone": Kind(409, "There is no phone number on the account"),
    "phone-needed": Kind(409, "The phone number is needed to sign in"),
    "password-already-set": Kind(409, "The account already has a password"),
    "password-sign-in-off": Kind(403, "Signing in with a password is turned off"),
    "no-verified-email": Kind(409, "The account has no verified email address"),
    "rate-limited": Kind(429, "Too many requests from this address lately"),
    "session-not-found": Kind(404, "There is no such session"),
    "account-changed": Kind(409, "The account changed while the request was checked; try again"),
    "temporarily-unavailable": Kind(503, "The service is temporarily unavailable"),
}


class Problem(Exception):
    """An error answered as ``application/problem+json``; ``name`` is a key of :data:`KINDS`.

    ``extensions`` become extension members of the body (RFC 9457 §3.2); ``headers`` go on the
    response (``WWW-Authenticate``, ``Retry-After`` ...).
    """

    def __init__(
        self,
        name: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.name = name
        self.kind = KINDS[name]
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions or {}

    def response(self, issuer: str) -> Response:
        kind = self.kind
        return problem_response(
            kind.status, type_uri(issuer, self.name), kind.title, self.detail, self.headers, **self.extensions
        )

    @classmethod
    def retry_after(cls, name: str, detail: str, wait: int) -> Problem:
        """A refusal that ends by itself: the wait goes in ``Retry-After`` and in the body."""
        return cls(name, detail, headers={"Retry-After": str(wait)}, extensions={"retry_after": wait})


def problem_response(
    status: int, type_: str, title: str, detail: str, headers: dict[str, str] | None = None, **extensions: Any
) -> Response:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extensions}
    return JSONResponse(
        body, status_code=status, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def type_uri(issuer: str, name: str) -> str:
    return f"{issuer}/problems/{name}"


async def handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(context(request).settings.issuer)


async def handle_http_exception(_request: Request, exc: Exception) -> Response:
    """The router's own errors (404, 405 with its ``Allow`` header) as ``about:blank`` problems."""
    assert isinstance(exc, HTTPException)
    detail = ROUTER_DETAILS.get(exc.status_code, exc.detail)
    return problem_response(
        exc.status_code, "about:blank", HTTPStatus(exc.status_code).phrase, detail, dict(exc.headers or {})
    )


async def handle_database_error(request: Request, exc: Exception) -> Response:
    """A database that fails is the app's quick 503, but as a problem: without this the app's own
    handler would answer it in the RFC 6749 shape of the OAuth endpoints."""
    log.error("database unavailable: %s", type(exc).__name__)
    problem = Problem.retry_after(
        "temporarily-unavailable",
        f"The service is temporarily unavailable. Try again in {DATABASE_RETRY_AFTER} seconds.",
        DATABASE_RETRY_AFTER,
    )
    return await handle_problem(request, problem)


HANDLERS = {Problem: handle_problem, HTTPException: handle_http_exception, DBAPIError: handle_database_error}


def account_problem(error: AccountError) -> Problem:
    """An account command's refusal: its code is the problem's type, its sentence the detail, and
    a wait goes in ``Retry-After``."""
    detail = message(error)
    if error.wait is not None:
        return Problem.retry_after(error.code.value, detail, error.wait)
    return Problem(error.code.value, detail)
