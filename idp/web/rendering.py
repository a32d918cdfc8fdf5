"""Rendering for the hosted pages and the responses that go back to a client's redirect URI."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts.sign_in_methods import leads_with_code
from ..oauth.authorization import AuthorizationResponse, Next, ShowConsent, ShowLogin, ShowSecondFactor, ShowTerms
from .branding import image_policy
from .locale import language, switcher_action, translate
from .request import context as services


def render(request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    """Render a page with its CSRF token, in the request's language, with the language switcher; a
    browser without the CSRF cookie gets one. A page showing a ``client``'s logo may load it."""
    ctx = services(request)
    csrf = ctx.csrf
    token, new_cookie = csrf.issue(request)
    page = {"csrf_token": token, **(context or {})}
    page["language"] = language(request)
    page["languages"] = list(ctx.languages.by_tag.values())
    page["switcher_action"] = switcher_action(request, page.get("request_id"))
    response = ctx.theme.pages.TemplateResponse(request, template, page, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    policy = image_policy(page.get("client"))
    if policy is not None:
        response.headers["Content-Security-Policy"] = policy
    if new_cookie is not None:
        csrf.set_cookie(response, new_cookie)
    return response


def error_page(request: Request, message: str, status_code: int = 400, **data: object) -> Response:
    """The page of a refusal that ends what the person was doing: ``message`` is English, marked
    with :func:`~idp.catalogs.N_`, and shown in the request's language with ``data`` filled in."""
    return message_page(request, translate(request, message, **data), status_code)


def message_page(request: Request, text: str, status_code: int = 400) -> Response:
    """The same page for ``text`` already in the request's language."""
    return render(request, "error.html", {"message": text}, status_code=status_code)


def with_query(uri: str, params: dict[str, str]) -> str:
    """Add ``params`` to ``uri`` and keep the query it already has (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def authorization_response(request: Request, response: AuthorizationResponse) -> Response:
    """Query mode redirects with 303 (RFC 9700 §4.12); form_post posts from an auto-submitted page."""
    params = {**response.params, "iss": services(request).settings.issuer}
    if response.response_mode == "form_post":
        page = services(request).theme.pages.TemplateResponse(
            request,
            "form_post.html",
            {"action": response.redirect_uri, "fields": params, "language": language(request)},
        )
        page.headers["Cache-Control"] = "no-store"
        return page
    return RedirectResponse(with_query(response.redirect_uri, params), status_code=303)


def next_step(request: Request, step: Next) -> Response:
    if isinstance(step, ShowLogin):
        page = "/login/code" if leads_with_code(services(request).settings, step.sign_in) else "/login"
        return RedirectResponse(f"{page}?{urlencode({'request': step.request_id})}", status_code=303)
    if isinstance(step, ShowSecondFactor):
        return RedirectResponse(f"/login/step-up?{urlencode({'request': step.request_id})}", status_code=303)
    if isinstance(step, ShowConsent):
        return RedirectResponse(f"/consent?{urlencode({'request': step.request_id})}", status_code=303)
    if isinstance(step, ShowTerms):
        return RedirectResponse(f"/terms?{urlencode({'request': step.request_id})}", status_code=303)
    return authorization_response(request, step)
