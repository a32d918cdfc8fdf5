"""The endpoints where a client authenticates to ask about a token: revocation (RFC 7009 §2)
and introspection (RFC 7662 §2)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..oauth.client_auth import read_credentials
from ..oauth.errors import InvalidClient, InvalidRequest, OAuthError
from ..oauth.introspection import introspect
from ..oauth.revocation import revoke
from ..security.forms import FormError, given, read_form, single_values
from ..storage import Client
from ..web.request import context
from .responses import json_response, oauth_error
from .throttling import throttle_client

Handler = Callable[[Request, Session, Client, dict[str, str]], Response]


async def revocation(request: Request) -> Response:
    return await _client_endpoint(request, _revoke)


async def introspection(request: Request) -> Response:
    return await _client_endpoint(request, _introspect)


async def _client_endpoint(request: Request, handler: Handler) -> Response:
    try:
        pairs = await read_form(request, require_form_type=True)
    except FormError as exc:
        return oauth_error(InvalidRequest(str(exc)))
    return await run_in_threadpool(_authenticated, request, pairs, handler)


def _authenticated(request: Request, pairs: list[tuple[str, str]], handler: Handler) -> Response:
    ctx = context(request)
    form, repeated = single_values(given(pairs))
    try:
        if repeated:
            raise InvalidRequest(f"parameters sent more than once: {', '.join(sorted(repeated))}")
        credentials = read_credentials(request.headers.get("authorization"), form)
        if "token" not in form:
            raise InvalidRequest("token is required")
        with ctx.db() as db:
            client: Client = ctx.client_authenticator.authenticate(db, credentials)
            db.commit()
            throttle_client(request, db, client)
            return handler(request, db, client, form)
    except OAuthError as exc:
        return oauth_error(exc)


def _revoke(request: Request, db: Session, client: Client, form: dict[str, str]) -> Response:
    ctx = context(request)
    revoke(db, ctx.keyring, ctx.settings.issuer, client, form["token"], form.get("token_type_hint"))
    return Response(status_code=200, headers={"Cache-Control": "no-store"})


def _introspect(request: Request, db: Session, client: Client, form: dict[str, str]) -> Response:
    """RFC 7662 §2.1: the caller must be a confidential client."""
    if client.is_public:
        raise InvalidClient("public clients cannot introspect tokens")
    ctx = context(request)
    answer = introspect(db, ctx.keyring, ctx.settings.issuer, client.id, form["token"], form.get("token_type_hint"))
    return json_response(answer)
