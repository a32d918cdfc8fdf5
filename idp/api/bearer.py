"""Who calls the account API: the person an access token of this provider acts for.

The token comes in the ``Authorization: Bearer`` header only (RFC 6750 §2.1): the bodies are
JSON, and a token in the query string ends up in logs. It must be one this provider issued,
signed by a key in its JWKS, unexpired and unrevoked, with the provider itself as audience
(RFC 9068 §4), and granted the ``openid`` scope. It must come from a grant a person made (an
authorization code and its refresh tokens): a client-credentials token acts for its client alone
and is refused with 403. The grant also tells which single sign-on session the token was issued
in, which is the session the API calls "current". Only first-party clients may use it: an app
that signs people in with an ``openid`` token must not thereby be able to end their sessions or
change their password.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..accounts.commands import Actor
from ..accounts.errors import AccountError
from ..accounts.users import lock_user
from ..audit import Event
from ..context import Context
from ..errors import Refused
from ..oauth.errors import InvalidToken
from ..oauth.tokens import verify_access_token
from ..security.rate_limits import Refusal
from ..storage import BrowserSession, Client, Grant, User
from ..web.pipeline import Call, Needs
from .bodies import Fields, parse_json, read_limited
from .problems import Problem, account_problem

REQUIRED_SCOPE = "openid"
REALM = "idp"


@dataclass(frozen=True)
class Caller:
    user: User
    client_id: str
    session_id: str | None


def _unauthorized(detail: str, error_description: str | None = None) -> Problem:
    """RFC 6750 §3.1: a request without a bearer token gets the challenge alone, one with a bad
    token also ``error="invalid_token"``."""
    challenge = f'Bearer realm="{REALM}"'
    if error_description is not None:
        challenge += f', error="invalid_token", error_description="{error_description}"'
    return Problem("invalid-token", detail, headers={"WWW-Authenticate": challenge})


def bearer_token(request: Request) -> str:
    """The token of the ``Authorization`` header; raises a 401 :class:`Problem` without one."""
    header = request.headers.get("authorization")
    if header is None:
        raise _unauthorized("Send an access token in the Authorization header: Bearer <token>.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise _unauthorized("The Authorization header must use the Bearer scheme.")
    token = token.strip()
    if not token:
        raise _unauthorized("The bearer token is empty.", "the token is empty")
    return token


def authenticate(ctx: Context, db: Session, token: str) -> Caller:
    """The person ``token`` acts for; raises a 401 or 403 :class:`Problem` otherwise."""
    issuer = ctx.settings.issuer
    try:
        claims = verify_access_token(db, ctx.keyring, issuer, token, ctx.live_tokens)
    except InvalidToken as exc:
        raise _unauthorized(f"The access token is not accepted: {exc.description}.", exc.description) from None
    audience = claims.get("aud")
    if issuer not in (audience if isinstance(audience, list) else [audience]):
        raise _unauthorized("The access token is meant for another audience.", "the token is for another audience")
    jti = str(claims["jti"])
    grant = db.get(Grant, jti.split(".", 1)[0]) if "." in jti else None
    if grant is None or grant.user_id != claims.get("sub"):
        raise Problem(
            "no-person",
            "This API acts for a person; a token from the client credentials grant acts only for its client.",
        )
    if REQUIRED_SCOPE not in str(claims.get("scope", "")).split():
        raise Problem(
            "insufficient-scope",
            f"The access token must carry the {REQUIRED_SCOPE} scope.",
            headers={
                "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", scope="{REQUIRED_SCOPE}"'
            },
        )
    client = db.get(Client, grant.client_id)
    if client is None or not client.first_party:
        raise Problem(
            "not-first-party",
            "Only the provider's own applications (registered with --first-party) may manage the account.",
        )
    user = db.get(User, grant.user_id)
    if user is None or user.disabled:
        raise _unauthorized("The person of this access token can no longer sign in.", "the account is disabled")
    return Caller(user=user, client_id=grant.client_id, session_id=grant.session_id)


def _actor(request: Request, db: Session, caller: Caller) -> Actor:
    session = db.get(BrowserSession, caller.session_id) if caller.session_id else None
    auth_time = session.auth_time if session is not None else None
    return Actor(caller.user, caller.session_id, auth_time, caller.client_id)


@dataclass(frozen=True)
class Raw:
    token: str
    body: bytes


class BearerSurface:
    """The account API as a surface of the request pipeline (:mod:`idp.web.pipeline`).

    The token is checked before the body, so a caller without a good token learns nothing about
    bodies; only a body over the size limit is refused first, while it is being read. Refusals are
    RFC 9457 problems (:mod:`idp.api.problems`).
    """

    async def read(self, request: Request, needs: Needs) -> object:
        token = bearer_token(request)
        return Raw(token, await read_limited(request) if needs.fields is not None else b"")

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> Actor:
        assert isinstance(raw, Raw)
        return _actor(request, db, authenticate(ctx, db, raw.token))

    def values(self, call: Call[Actor], raw: object, needs: Needs) -> dict[str, str]:
        assert isinstance(raw, Raw)
        if needs.fields is None:
            return {}
        assert isinstance(needs.fields, dict)
        fields: Fields = needs.fields
        return parse_json(call.request, raw.body, fields)

    def relock(self, call: Call[Actor], raw: object) -> Call[Actor]:
        """Check the token again once the person's row is locked: what held the lock before us (a
        password reset) may have revoked it."""
        assert isinstance(raw, Raw)
        lock_user(call.db, call.who.user.id)
        call.db.expire_all()
        call.who = _actor(call.request, call.db, authenticate(call.ctx, call.db, raw.token))
        return call

    def refused(self, call: Call[Actor], refusal: Refusal) -> Response:
        """The same per-address budgets as the hosted pages' forms."""
        call.who.record(call.db, Event.RATE_LIMITED, "failure", limit=refusal.limit.value)
        problem = Problem.retry_after(
            "rate-limited",
            f"Too many requests. Try again in {refusal.retry_after} seconds.",
            refusal.retry_after,
        )
        return problem.response(call.ctx.settings.issuer)

    def failed(self, call: Call[Actor], error: Refused) -> Response:
        assert isinstance(error, AccountError)
        return account_problem(error).response(call.ctx.settings.issuer)


BEARER = BearerSurface()
