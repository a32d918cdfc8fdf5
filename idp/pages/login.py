"""The sign-in page: ``username`` (email or phone) and ``password``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..accounts.authentication import Outcome, sign_in_with_password
from ..audit import Event
from ..metrics import SIGN_INS
from ..oauth.authorization import load_pending
from ..oauth.errors import BadAuthorizationTarget
from ..security.rate_limits import Limit
from ..web.rendering import error_page, render
from ..web.request import audit, context, transaction
from ..web.throttling import throttled
from .forms import form_page
from .signin import complete_sign_in, start_second_factor

FAILED = "The email, phone number or password is not right."
UNVERIFIED = "Verify your email address first: follow the link in the email we sent you."
EXPIRED_FORM = "This form has expired. Please try again."


@form_page
def login(request: Request, form: dict[str, str]) -> Response:
    ctx = context(request)
    request_id = form.get("request") if request.method == "POST" else request.query_params.get("request")
    with transaction(request) as db:
        client = params = None
        if request_id:
            try:
                _, client, params = load_pending(db, request_id)
            except BadAuthorizationTarget as exc:
                return error_page(request, str(exc))
        page = {
            "request_id": request_id,
            "client_name": client.name if client else None,
            "username": form.get("username", params.login_hint if params else "") or "",
            "self_registration": ctx.settings.self_registration,
        }
        if request.method != "POST":
            return render(request, "login.html", page)
        if not context(request).csrf.valid(request, form.get("csrf_token")):
            return render(request, "login.html", {**page, "error": EXPIRED_FORM}, status_code=400)
        if refused := throttled(request, Limit.SIGN_IN, account=form.get("username", ""), db=db):
            return refused
        result = sign_in_with_password(
            db, ctx.settings, ctx.secret_key, form.get("username", ""), form.get("password", "")
        )
        user = result.user
        if result.outcome is not Outcome.SIGNED_IN:
            audit(
                request,
                db,
                Event.SIGN_IN,
                outcome="failure",
                user_id=user.id if user else None,
                client_id=client.id if client else None,
                detail={"method": "password", "reason": result.reason},
            )
            if result.reason == "locked_now":
                audit(request, db, Event.ACCOUNT_LOCKED, outcome="success", user_id=user.id if user else None)
            db.commit()
            SIGN_INS.labels(method="password", outcome="failure").inc()
            unverified = result.outcome is Outcome.EMAIL_NOT_VERIFIED
            page = {**page, "error": UNVERIFIED if unverified else FAILED, "unverified_email": unverified}
            return render(request, "login.html", page, status_code=400)
        assert user is not None
        if user.mfa_method:
            return start_second_factor(request, db, user, authorization_request_id=request_id)
        return complete_sign_in(request, db, user, amr=["pwd"], authorization_request_id=request_id)
