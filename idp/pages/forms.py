"""Page endpoints: read a POSTed form within limits, then run the handler in the thread pool.

Handlers are synchronous because they use the database; the form is read before, in the event
loop, so a slow or oversized upload never holds a thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..security.forms import FormError, read_form, single_values
from ..web.rendering import error_page

Handler = Callable[[Request, dict[str, str]], Response]


async def posted_form(request: Request) -> dict[str, str] | Response:
    """The POSTed form by field name, ``{}`` for other methods, or the 400 page of a bad body."""
    if request.method != "POST":
        return {}
    try:
        form, _ = single_values(await read_form(request))
    except FormError as exc:
        return error_page(request, str(exc))
    return form


def form_page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        form = await posted_form(request)
        if isinstance(form, Response):
            return form
        return await run_in_threadpool(handler, request, form)

    endpoint.__name__ = handler.__name__.lstrip("_")
    endpoint.__doc__ = handler.__doc__
    return endpoint
