"""The UserInfo endpoint (OIDC Core §5.3), with RFC 6750 bearer token handling.

The token may come in the Authorization header (GET or POST) or as ``access_token`` in a POST
form body (RFC 6750 §2.2), never both (§2).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..oauth import scopes
from ..oauth.errors import InsufficientScope, InvalidRequest, InvalidToken, OAuthError
from ..oauth.tokens import verify_access_token
from ..security.forms import FormError, read_form, single_values
from ..storage import User
from ..web.request import context


def _challenge(error: OAuthError | None) -> Response:
    header = 'Bearer realm="idp"'
    if error is not None:
        header += f', error="{error.error}"'
        if error.description:
            header += f', error_description="{error.description}"'
        body = error.body()
        status = error.status_code
    else:
        body, status = {}, 401
    return JSONResponse(body, status_code=status, headers={"WWW-Authenticate": header, "Cache-Control": "no-store"})


async def userinfo(request: Request) -> Response:
    header = request.headers.get("authorization")
    body_token = None
    if request.method == "POST":
        try:
            form, repeated = single_values(await read_form(request))
        except FormError as exc:
            return _challenge(InvalidRequest(str(exc)))
        if "access_token" in repeated:
            return _challenge(InvalidRequest("access_token sent more than once"))
        body_token = form.get("access_token")
    if header is not None and body_token is not None:
        return _challenge(InvalidRequest("send the access token one way only"))
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _challenge(None if scheme.lower() != "bearer" else InvalidRequest("empty bearer token"))
        token = token.strip()
    elif body_token:
        token = body_token
    else:
        return _challenge(None)
    return await run_in_threadpool(_userinfo, request, token)


def _userinfo(request: Request, token: str) -> Response:
    ctx = context(request)
    with ctx.db() as db:
        try:
            claims = verify_access_token(db, ctx.keyring, ctx.settings.issuer, token)
            granted = str(claims.get("scope", "")).split()
            if "openid" not in granted:
                raise InsufficientScope("the access token lacks the openid scope")
            user = db.get(User, claims.get("sub"))
            if user is None or user.disabled:
                raise InvalidToken("the person of this token no longer exists")
        except OAuthError as exc:
            return _challenge(exc)
        return JSONResponse(
            {"sub": user.id, **scopes.user_claims(user, granted)}, headers={"Cache-Control": "no-store"}
        )
