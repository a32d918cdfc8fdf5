"""The end-session endpoint and its confirmation page (button ``decision`` = ``logout``)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..oauth.errors import BadAuthorizationTarget
from ..oauth.logout import parse_logout
from ..sso import end_session
from ..web.browser import clear_session_cookie, session_to_end
from ..web.rendering import error_page, render, with_query
from ..web.request import context, transaction
from .forms import posted_form


async def logout(request: Request) -> Response:
    """RP-Initiated Logout §2: the parameters come by GET or by POST."""
    values = await posted_form(request) if request.method == "POST" else dict(request.query_params)
    if isinstance(values, Response):
        return values
    return await run_in_threadpool(_logout, request, values)


def _logout(request: Request, values: dict[str, str]) -> Response:
    ctx = context(request)
    confirming = "decision" in values
    if confirming and (request.method != "POST" or not context(request).csrf.valid(request, values.get("csrf_token"))):
        return error_page(request, "This form has expired. Please sign out again.")
    if confirming and values["decision"] != "logout":
        return error_page(request, "Choose to sign out, or close this page.")
    with transaction(request) as db:
        try:
            ask = parse_logout(db, ctx.keyring, ctx.settings.issuer, values)
        except BadAuthorizationTarget as exc:
            return error_page(request, str(exc))
        active = session_to_end(request, db)
        if active is not None and not confirming and not ask.hint_names(active):
            return render(
                request,
                "logout_confirm.html",
                {
                    "client_id": ask.client.id if ask.client else None,
                    "client_name": ask.client.name if ask.client else None,
                    "post_logout_redirect_uri": ask.post_logout_redirect_uri,
                    "state": ask.state,
                },
            )
        if active is not None:
            end_session(db, active.session.id)
            db.commit()
    response: Response
    if ask.post_logout_redirect_uri is not None:
        params = {"state": ask.state} if ask.state is not None else {}
        response = RedirectResponse(with_query(ask.post_logout_redirect_uri, params), status_code=303)
    else:
        response = render(request, "signed_out.html")
    clear_session_cookie(request, response)
    return response
