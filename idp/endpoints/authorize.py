"""The authorization endpoint (RFC 6749 §3.1): GET and POST (OIDC Core §3.1.2.1).

A relying party sends the person here from its own site, so no CSRF token of ours can come with the
request: the redirect target is validated first, and nothing is decided until the person signs in
or consents on our own pages.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..context import Context
from ..errors import Refused
from ..oauth.authorization import AuthorizationError, ShowConsent, ShowLogin, ShowTerms, decide, parse_request
from ..security.forms import FormError, read_form
from ..security.rate_limits import Limit, Refusal
from ..sso import note_use
from ..web.browser import current_session
from ..web.pipeline import Answer, Call, Needs, endpoint
from ..web.rendering import authorization_response, error_page, next_step
from ..web.throttling import refusal_page

Visitor = Call[None]


class AuthorizationSurface:
    """Parameters from the query or the form, every pair of them (a repeated one is refused);
    refusals are a page when the redirect target cannot be trusted, a redirect to it otherwise."""

    async def read(self, request: Request, needs: Needs) -> object:
        if request.method != "POST":
            return request.query_params.multi_items()
        try:
            return await read_form(request)
        except FormError as exc:
            raise Answer(error_page(request, str(exc))) from None

    def authenticate(self, request: Request, ctx: Context, db: Session, raw: object) -> None:
        return None

    def values(self, call: Visitor, raw: object, needs: Needs) -> dict[str, str]:
        return {}

    def relock(self, call: Visitor, raw: object) -> Visitor:
        return call

    def refused(self, call: Visitor, refusal: Refusal) -> Response:
        return refusal_page(call.request, refusal, call.db)

    def failed(self, call: Visitor, error: Refused) -> Response:
        if isinstance(error, AuthorizationError):
            return authorization_response(call.request, error.response)
        return error_page(call.request, str(error))


def _authorize(call: Visitor) -> Response:
    """Sign-in and consent wait on a pending request that ``decide`` has just written: anyone can
    make one without signing in, so how many one address may keep is limited."""
    assert isinstance(call.raw, list)
    ctx = call.ctx
    client, params = parse_request(call.db, ctx.keyring, ctx.settings.issuer, call.raw)
    active = current_session(call.request, call.db)
    if active is not None:
        note_use(call.db, active.session)
    step = decide(call.db, client, params, active, terms_version=ctx.settings.terms_version)
    if isinstance(step, ShowLogin | ShowConsent | ShowTerms):
        call.spend(Limit.AUTHORIZE)
    return next_step(call.request, step)


authorize = endpoint(AuthorizationSurface(), Needs(lock=False), _authorize)
