"""Reading a page's POSTed form within limits, in the event loop, so that a slow or oversized
upload never holds a thread."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..security.forms import FormError, read_form, single_values
from ..web.rendering import error_page


async def posted_form(request: Request) -> dict[str, str] | Response:
    """The POSTed form by field name, ``{}`` for other methods, or the 400 page of a bad body."""
    if request.method != "POST":
        return {}
    try:
        form, _ = single_values(await read_form(request))
    except FormError as exc:
        return error_page(request, str(exc))
    return form
