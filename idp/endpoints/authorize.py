"""The authorization endpoint (RFC 6749 §3.1): GET and POST (OIDC Core §3.1.2.1)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..oauth.authorization import AuthorizationError, ShowConsent, ShowLogin, decide, parse_request
from ..oauth.errors import BadAuthorizationTarget
from ..security.forms import FormError, read_form
from ..security.rate_limits import Limit
from ..sso import note_use
from ..web.browser import current_session
from ..web.rendering import authorization_response, error_page, next_step
from ..web.request import context
from ..web.throttling import throttled_writes


async def authorize(request: Request) -> Response:
    if request.method == "POST":
        try:
            pairs = await read_form(request)
        except FormError as exc:
            return error_page(request, str(exc))
    else:
        pairs = request.query_params.multi_items()
    return await run_in_threadpool(_authorize, request, pairs)


def _authorize(request: Request, pairs: list[tuple[str, str]]) -> Response:
    ctx = context(request)
    with ctx.db() as db:
        try:
            client, params = parse_request(db, ctx.keyring, ctx.settings.issuer, pairs)
            active = current_session(request, db)
            if active is not None:
                note_use(db, active.session)
            step = decide(db, client, params, active)
            # Sign-in and consent wait on a pending request that decide has just written: anyone can
            # make one without signing in, so how many one address may keep is limited.
            waits = isinstance(step, ShowLogin | ShowConsent)
            if waits and (refused := throttled_writes(request, Limit.AUTHORIZE, db)):
                return refused
            db.commit()
        except BadAuthorizationTarget as exc:
            return error_page(request, str(exc))
        except AuthorizationError as exc:
            return authorization_response(request, exc.response)
    return next_step(request, step)
