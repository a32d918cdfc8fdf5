"""The UserInfo endpoint (OIDC Core §5.3), with RFC 6750 bearer token handling, as a surface of the
request pipeline (:mod:`idp.web.pipeline`).

The token may come in the Authorization header (GET or POST) or as ``access_token`` in a POST
form body (RFC 6750 §2.2), never both (§2). Every refusal is a bearer challenge (§3). The client
the verified token was issued to is noted for CORS (:mod:`idp.web.cors`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..context import Context
from ..errors import Refused
from ..oauth import scopes
from ..oauth.errors import InsufficientScope, InvalidRequest, InvalidToken, OAuthError
from ..oauth.tokens import verify_access_token
from ..security.forms import FormError, read_form, single_values
from ..security.rate_limits import Refusal
from ..web.cors import note_client
from ..web.json_response import JSONResponse
from ..web.pipeline import Answer, Call, Needs, endpoint

Claims = dict[str, Any]


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


class UserinfoSurface:
    """The caller is the access token's verified claims; it locks no person (``Needs(lock=False)``)
    and spends no per-address limit."""

    async def read(self, request: Request, needs: Needs) -> object:
        """The bearer token, from the header or the form body."""
        header = request.headers.get("authorization")
        body_token = None
        if request.method == "POST":
            try:
                form, repeated = single_values(await read_form(request))
            except FormError as exc:
                raise Answer(_challenge(InvalidRequest(str(exc)))) from None
            if "access_token" in repeated:
                raise Answer(_challenge(InvalidRequest("access_token sent more than once")))
            body_token = form.get("access_token")
        if header is not None and body_token is not None:
            raise Answer(_challenge(InvalidRequest("send the access token one way only")))
        if header is None:
            if not body_token:
                raise Answer(_challenge(None))
            return body_token
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise Answer(_challenge(None))
        if not token.strip():
            raise Answer(_challenge(InvalidRequest("empty bearer token")))
        return token.strip()

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> Claims:
        assert isinstance(raw, str)
        try:
            claims = verify_access_token(db, ctx.keyring, ctx.settings.issuer, raw, ctx.live_tokens)
        except OAuthError as exc:
            raise Answer(_challenge(exc)) from None
        client_id = claims.get("client_id")
        note_client(request, client_id if isinstance(client_id, str) else None)
        return claims

    def values(self, call: Call[Claims], raw: object, needs: Needs) -> dict[str, str]:
        return {}

    def relock(self, call: Call[Claims], raw: object) -> Call[Claims]:
        raise AssertionError("userinfo locks no person: Needs(lock=False)")

    def refused(self, call: Call[Claims], refusal: Refusal) -> Response:
        raise AssertionError("userinfo spends no per-address limit")

    def failed(self, call: Call[Claims], error: Refused) -> Response:
        assert isinstance(error, OAuthError)
        return _challenge(error)


def _userinfo(call: Call[Claims]) -> Response:
    granted = str(call.who.get("scope", "")).split()
    if "openid" not in granted:
        raise InsufficientScope("the access token lacks the openid scope")
    person = call.ctx.people.get(call.db, str(call.who.get("sub")))
    if person is None or person.disabled:
        raise InvalidToken("the person of this token no longer exists")
    claims = person.released(scopes.wanted(granted, _asked(call)))
    return JSONResponse({"sub": person.id, **claims}, headers={"Cache-Control": "no-store"})


def _asked(call: Call[Claims]) -> tuple[str, ...]:
    """The claims the token's grant asked for by name for this response (OIDC Core §5.5); the
    grant is the one its ``jti`` names (:mod:`idp.oauth.tokens`)."""
    grant_id, dot, _ = str(call.who.get("jti", "")).partition(".")
    return call.ctx.asked_claims.for_userinfo(call.db, grant_id) if dot else ()


def _any_token(raw: object) -> bool:
    """Any request: a token found unrevoked before, of a person kept, is answered from memory."""
    return True


userinfo = endpoint(UserinfoSurface(), Needs(lock=False, from_memory=_any_token), _userinfo)
