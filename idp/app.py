"""Builds the Starlette application: routes, middleware, and the per-process context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from . import api
from .audit import run_audit_writer
from .caching.generations import run_settling
from .context import Context
from .endpoints import discovery, health, metrics
from .endpoints.authorization_challenge import authorization_challenge
from .endpoints.authorize import authorize
from .endpoints.client_endpoints import introspection, revocation
from .endpoints.token import token
from .endpoints.userinfo import userinfo
from .housekeeping import run_housekeeping
from .messaging.worker import run_worker
from .oauth.metadata import PATHS
from .pages import security
from .pages.account import (
    account,
    add_phone,
    change_password,
    delete_account,
    end_one_session,
    end_other_sessions,
    export_data,
    remove_phone,
    resend_phone_code,
    send_password_code,
    set_password,
    update_profile,
    verify_phone,
)
from .pages.account_email import change_email, confirm_email
from .pages.codes import enter_code, request_code, resend_code
from .pages.consent import consent
from .pages.language import switch_language
from .pages.login import login
from .pages.logout import logout
from .pages.password import forgot_password, reset_password
from .pages.register import register, resend_verification, verify_email
from .pages.step_up import step_up
from .pages.terms import terms_page
from .settings import Settings
from .web.cors import client_route
from .web.documents import PublicDocuments
from .web.edge import Edge
from .web.json_response import JSONResponse

log = logging.getLogger("idp")


async def _database_unavailable(_request: Request, exc: Exception) -> Response:
    """A database that is down or unreachable is a quick, clean 503, never a 500."""
    log.error("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        {"error": "temporarily_unavailable", "error_description": "the service is temporarily unavailable"},
        status_code=503,
        headers={"Retry-After": "5", "Cache-Control": "no-store"},
    )


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    """Every server process cleans up in the background while it serves, writes the audit queue,
    reads the caches' change counters from the database now and then
    (:func:`~idp.caching.generations.run_settling`), and delivers the outbox unless
    ``IDP_DELIVERY_WORKER=off`` leaves that to other processes."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_housekeeping(app.state.ctx, stop)),
        asyncio.create_task(run_audit_writer(app.state.ctx.audit_queue, stop)),
    ]
    if app.state.ctx.settings.delivery_worker:
        tasks.append(asyncio.create_task(run_worker(app.state.ctx, stop)))
    if app.state.ctx.generations.mirror is not None:
        tasks.append(asyncio.create_task(run_settling(app.state.ctx.generations, app.state.ctx.db, stop)))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_environ()
    ctx = Context.build(settings)
    routes = [
        Route(PATHS["authorization_endpoint"], authorize, methods=["GET", "POST"]),
        client_route(PATHS["token_endpoint"], token, methods=["POST"]),
        client_route(PATHS["authorization_challenge_endpoint"], authorization_challenge, methods=["POST"]),
        client_route(PATHS["userinfo_endpoint"], userinfo, methods=["GET", "POST"]),
        client_route(PATHS["revocation_endpoint"], revocation, methods=["POST"]),
        Route(PATHS["introspection_endpoint"], introspection, methods=["POST"]),
        Route(PATHS["end_session_endpoint"], logout, methods=["GET", "POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/login/code", request_code, methods=["GET", "POST"]),
        Route("/login/verify", enter_code, methods=["GET", "POST"]),
        Route("/login/verify/resend", resend_code, methods=["POST"]),
        Route("/login/step-up", step_up, methods=["GET", "POST"]),
        Route("/consent", consent, methods=["GET", "POST"]),
        Route("/terms", terms_page, methods=["GET", "POST"]),
        Route("/language", switch_language, methods=["POST"]),
        Route("/password/forgot", forgot_password, methods=["GET", "POST"]),
        Route("/password/reset", reset_password, methods=["GET", "POST"]),
        Route("/register", register, methods=["GET", "POST"]),
        Route("/verify-email", verify_email, methods=["GET", "POST"]),
        Route("/verify-email/resend", resend_verification, methods=["POST"]),
        Route("/account", account),
        Route("/account/profile", update_profile, methods=["POST"]),
        Route("/account/email", change_email, methods=["GET", "POST"]),
        Route("/account/email/confirm", confirm_email, methods=["GET", "POST"]),
        Route("/account/phone", add_phone, methods=["POST"]),
        Route("/account/phone/verify", verify_phone, methods=["GET", "POST"]),
        Route("/account/phone/verify/resend", resend_phone_code, methods=["POST"]),
        Route("/account/phone/remove", remove_phone, methods=["POST"]),
        Route("/account/sessions/end-others", end_other_sessions, methods=["POST"]),
        Route("/account/sessions/{session_id}/end", end_one_session, methods=["POST"]),
        Route("/account/password", change_password, methods=["POST"]),
        Route("/account/export", export_data),
        Route("/account/delete", delete_account, methods=["POST"]),
        Route("/account/password/set", set_password, methods=["GET", "POST"]),
        Route("/account/password/set/code", send_password_code, methods=["POST"]),
        Route("/account/security", security.security),
        Route("/account/security/enable", security.enable, methods=["POST"]),
        Route("/account/security/confirm", security.confirm, methods=["POST"]),
        Route("/account/security/resend", security.resend, methods=["POST"]),
        Route("/account/security/disable", security.disable, methods=["POST"]),
        Route("/account/security/recovery-codes", security.recovery_codes, methods=["POST"]),
        api.mount(),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route("/metrics", metrics.metrics),
        Mount("/static", ctx.theme.static_files(), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={DBAPIError: _database_unavailable}, lifespan=_lifespan)
    app.state.ctx = ctx
    app.add_middleware(PublicDocuments, documents=discovery.DOCUMENTS)
    app.add_middleware(
        Edge,
        trusted_proxies=settings.trusted_proxies,
        static_routes=discovery.DOCUMENTS.keys(),
        https=settings.secure_cookies,
        metrics_port=settings.metrics_port,
    )
    return app
