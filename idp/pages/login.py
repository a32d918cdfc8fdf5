"""The sign-in page: ``username`` (email or phone) and ``password``."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts.authentication import Outcome, sign_in_with_password
from ..oauth.authorization import AuthorizationError, decide, load_pending
from ..oauth.errors import BadAuthorizationTarget
from ..security.forms import FormError, read_form, single_values
from ..sessions import ActiveSession, end_session, start_session
from .browser import current_session, request_address, set_session_cookie
from .rendering import authorization_response, error_page, next_step, render

FAILED = "The email, phone number or password is not right."
UNVERIFIED = "Verify your email address first: follow the link in the email we sent you."
EXPIRED_FORM = "This form has expired. Please try again."


async def login(request: Request) -> Response:
    form: dict[str, str] = {}
    if request.method == "POST":
        try:
            form, _ = single_values(await read_form(request))
        except FormError as exc:
            return error_page(request, str(exc))
    return await run_in_threadpool(_login, request, form)


def _login(request: Request, form: dict[str, str]) -> Response:
    ctx = request.app.state.ctx
    request_id = form.get("request") if request.method == "POST" else request.query_params.get("request")
    with ctx.sessions() as db:
        pending = client = params = None
        if request_id:
            try:
                pending, client, params = load_pending(db, request_id)
            except BadAuthorizationTarget as exc:
                return error_page(request, str(exc))
        page = {
            "request_id": request_id,
            "client_name": client.name if client else None,
            "username": form.get("username", params.login_hint if params else "") or "",
        }
        if request.method != "POST":
            return render(request, "login.html", page)
        if not request.app.state.csrf.valid(request, form.get("csrf_token")):
            return render(request, "login.html", {**page, "error": EXPIRED_FORM}, status_code=400)
        result = sign_in_with_password(
            db,
            form.get("username", ""),
            form.get("password", ""),
            phone_region=ctx.settings.phone_default_region,
            require_verified_email=ctx.settings.require_verified_email,
        )
        if result.outcome is not Outcome.SIGNED_IN:
            db.commit()
            message = UNVERIFIED if result.outcome is Outcome.EMAIL_NOT_VERIFIED else FAILED
            return render(request, "login.html", {**page, "error": message}, status_code=400)
        assert result.user is not None
        previous = current_session(request, db)
        if previous is not None:
            end_session(db, previous.session.id)
        session, cookie = start_session(
            db,
            result.user,
            amr=["pwd"],
            ip=request_address(request),
            user_agent=request.headers.get("user-agent"),
        )
        response: Response
        if pending is not None and client is not None and params is not None:
            pending.session_id = session.id
            try:
                step = decide(db, client, params, ActiveSession(session, result.user), pending)
                response = next_step(request, step)
            except AuthorizationError as exc:
                response = authorization_response(request, exc.response)
        else:
            response = RedirectResponse("/account", status_code=303)
        db.commit()
    set_session_cookie(request, response, cookie)
    return response
