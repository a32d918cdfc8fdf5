"""The consent page: buttons named ``decision``, ``allow`` or ``deny``."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..oauth import scopes
from ..oauth.authorization import deny, issue_code, load_pending, needs_sign_in, record_consent
from ..oauth.errors import BadAuthorizationTarget
from ..sso import note_use
from ..web.browser import current_session
from ..web.rendering import authorization_response, error_page, render
from ..web.request import context
from .forms import form_page


@form_page
def consent(request: Request, form: dict[str, str]) -> Response:
    ctx = context(request)
    request_id = form.get("request") if request.method == "POST" else request.query_params.get("request")
    with ctx.db() as db:
        try:
            pending, client, params = load_pending(db, request_id)
        except BadAuthorizationTarget as exc:
            return error_page(request, str(exc))
        active = current_session(request, db)
        if needs_sign_in(params, active, pending):
            return RedirectResponse(f"/login?{urlencode({'request': pending.id})}", status_code=303)
        assert active is not None
        note_use(db, active.session)
        if request.method != "POST":
            return render(
                request,
                "consent.html",
                {
                    "request_id": pending.id,
                    "client_name": client.name,
                    "email": active.user.email,
                    "scopes": [(s, scopes.DESCRIPTIONS.get(s, s)) for s in params.scope],
                },
            )
        if not context(request).csrf.valid(request, form.get("csrf_token")):
            return error_page(request, "This form has expired. Go back to the application and start again.")
        decision = form.get("decision")
        try:
            if decision == "allow":
                # The request is answered first: a second answer racing this one stops there.
                response = authorization_response(request, issue_code(db, params, active, pending))
                record_consent(db, client, params, active.user.id)
            elif decision == "deny":
                response = authorization_response(request, deny(db, params, pending).response)
            else:
                return error_page(request, "Choose allow or deny.")
        except BadAuthorizationTarget as exc:
            db.rollback()
            return error_page(request, str(exc))
        db.commit()
    return response
