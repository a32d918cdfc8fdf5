"""The signed-in person's own page."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .browser import current_session
from .rendering import render


async def account(request: Request) -> Response:
    return await run_in_threadpool(_account, request)


def _account(request: Request) -> Response:
    with request.app.state.ctx.sessions() as db:
        active = current_session(request, db)
        if active is None:
            return RedirectResponse("/login", status_code=303)
        db.commit()
        return render(request, "account.html", {"user": active.user, "session": active.session})
