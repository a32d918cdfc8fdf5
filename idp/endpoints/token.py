"""The token endpoint (RFC 6749 §3.2): authenticate the client, then run its grant."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..metrics import TOKENS
from ..oauth.client_auth import read_credentials
from ..oauth.errors import InvalidRequest, OAuthError, UnsupportedGrantType
from ..oauth.grants import authorization_code, client_credentials, refresh_token
from ..security.forms import FormError, given, read_form, single_values
from ..web.request import context
from .responses import json_response, oauth_error
from .throttling import throttle_client

GRANTS = (authorization_code.GRANT_TYPE, refresh_token.GRANT_TYPE, client_credentials.GRANT_TYPE)


async def token(request: Request) -> Response:
    try:
        pairs = await read_form(request, require_form_type=True)
    except FormError as exc:
        return oauth_error(InvalidRequest(str(exc)))
    return await run_in_threadpool(_token, request, pairs)


def _token(request: Request, pairs: list[tuple[str, str]]) -> Response:
    ctx = context(request)
    form, repeated = single_values(given(pairs))
    try:
        if repeated:
            raise InvalidRequest(f"parameters sent more than once: {', '.join(sorted(repeated))}")
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        if grant_type not in GRANTS:
            raise UnsupportedGrantType(f"grant_type {grant_type[:64]!r} is not supported")
        credentials = read_credentials(request.headers.get("authorization"), form)
        with ctx.db() as db:
            client = ctx.client_authenticator.authenticate(db, credentials)
            db.commit()
            throttle_client(request, db, client)
            if grant_type == authorization_code.GRANT_TYPE:
                body = authorization_code.exchange(db, ctx.token_issuer, client, form)
            elif grant_type == refresh_token.GRANT_TYPE:
                body = refresh_token.refresh(db, ctx.token_issuer, client, form)
            else:
                body = client_credentials.issue(ctx.token_issuer, client, form)
    except OAuthError as exc:
        return oauth_error(exc)
    TOKENS.labels(grant_type=grant_type).inc()
    return json_response(body)
