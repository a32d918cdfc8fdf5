"""The language of a request's pages, and of the messages it sends.

Chosen in this order, the first that names a language idp has a catalog for:

1. the language picked with the switcher in this browser (the ``idp_locale`` cookie): the person
   at the keyboard said so, after anything an application asked for;
2. ``ui_locales`` (OpenID Connect Core §3.1.2.1: BCP 47 tags, best first) of the page's own URL,
   or of the authorization request the page serves (:func:`note_ui_locales`), so that it holds on
   every page of the sign-in, not only the first;
3. the signed-in person's saved language (:func:`note_saved`), or the nearest one: ``fa-IR`` is
   served in ``fa``;
4. the browser's ``Accept-Language``;
5. ``IDP_DEFAULT_LOCALE``.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from ..languages import Language
from .browser import browser_cookie, set_browser_cookie
from .request import context

COOKIE = "idp_locale"
COOKIE_LIFETIME = 365 * 24 * 3600
MAX_PREFERENCES = 16
KEPT = ("request", "ui_locales")
"""What of a page's query the switcher brings back: the authorization request, not a link's token."""


def language(request: Request) -> Language:
    """The language of ``request`` (see the module's docstring for the order)."""
    languages = context(request).languages
    return (
        languages.get(browser_cookie(request, COOKIE))
        or languages.negotiate(_ui_locales(request))
        or languages.nearest(getattr(request.state, "saved_locale", None))
        or languages.negotiate(accepted_languages(request.headers.get("accept-language", "")))
        or languages.default
    )


def translate(request: Request, message: str, **data: object) -> str:
    """``message`` (marked with :func:`~idp.catalogs.N_`) in the language of ``request``."""
    return language(request).text(message, **data)


def note_ui_locales(request: Request, ui_locales: str | None) -> None:
    """The ``ui_locales`` of the authorization request this page serves."""
    request.state.ui_locales = ui_locales


def note_saved(request: Request, tag: str | None) -> None:
    """The saved language of the person this page is for."""
    request.state.saved_locale = tag


def _ui_locales(request: Request) -> list[str]:
    asked = [request.query_params.get("ui_locales"), getattr(request.state, "ui_locales", None)]
    return [tag for value in asked if value for tag in value.split(" ")][:MAX_PREFERENCES]


def accepted_languages(header: str) -> list[str]:
    """The tags of an ``Accept-Language`` header (RFC 9110 §12.5.4), the most wanted first; ``*``
    and tags with ``q=0`` are left out, and so is a malformed weight."""
    weighted: list[tuple[float, str]] = []
    for item in header.split(",")[:MAX_PREFERENCES]:
        tag, _, parameters = item.strip().partition(";")
        name, _, weight = parameters.strip().partition("=")
        try:
            quality = float(weight) if name.strip().lower() == "q" else 1.0
        except ValueError:
            continue
        if tag and tag != "*" and quality > 0:
            weighted.append((quality, tag.strip()))
    return [tag for _, tag in sorted(weighted, key=lambda pair: -pair[0])]


def choose(request: Request, response: Response, tag: str) -> None:
    """Remember the language picked with the switcher in this browser."""
    set_browser_cookie(request, response, COOKIE, tag, max_age=COOKIE_LIFETIME)


def switcher_action(request: Request, request_id: str | None) -> str:
    """Where the switcher posts: ``/language``, with the page to come back to: this page's path
    (``/account`` for a path that only takes forms) and the authorization request it serves. Nothing
    else of the query comes along: a link's token never goes into another URL."""
    path = request.url.path if _has_page(request, request.url.path) else "/account"
    kept = {name: request.query_params[name] for name in KEPT if request.query_params.get(name)}
    if request_id:
        kept["request"] = request_id
    back = path + (f"?{urlencode(kept)}" if kept else "")
    return "/language?" + urlencode({"next": back})


def _has_page(request: Request, path: str) -> bool:
    scope = {"type": "http", "path": path, "method": "GET"}
    return any(route.matches(scope)[0] == Match.FULL for route in request.app.routes)


def local_path(target: str | None) -> str:
    """``target`` when it is a path on this site, ``/account`` otherwise: never a way to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/account"
    if any(not character.isprintable() or character.isspace() for character in target):
        return "/account"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/account"
    return target
