"""Removing what has expired: codes, tokens, sessions, delivered messages, old audit events,
registrations nobody proved, and the cost classes of imported hashes nobody keeps any more.

Each row goes only once it can no longer matter: a rotated refresh token stays until it would have
expired, because presenting it again must still revoke its family; a grant stays while any refresh
token of it or any access token naming it can still be presented. An account made on
``/register`` that has proven nothing (no verified email or phone, never signed in: it still keeps
the registering browser's digest) goes once its registration's lifetime is over and no link to
verify it can still be followed: it would otherwise hold its address for good, and someone who
registered another person's address would keep that person from registering it or moving an
account of theirs to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Delete, and_, delete, exists, or_, select
from sqlalchemy.orm import Session

from .accounts.legacy_hashes import forget_cost_classes
from .accounts.registration import LINK_LIFETIME as REGISTRATION_LIFETIME
from .accounts.registration import PURPOSE as VERIFY_EMAIL
from .observability.outages import OutageLog
from .settings import Settings
from .storage import (
    ActionToken,
    AuditEvent,
    AuthorizationCode,
    AuthorizationRequest,
    BrowserSession,
    ClientAssertion,
    Grant,
    OneTimeCode,
    OutboxMessage,
    PendingSignIn,
    RefreshToken,
    RevokedAccessToken,
    User,
    changed_rows,
    now,
)

if TYPE_CHECKING:
    from .context import Context

DAY = 86_400
MESSAGE_RETENTION = 7 * DAY
ENDED_SESSION_RETENTION = 30 * DAY
CODE_RETENTION = 3600
log = logging.getLogger("idp.housekeeping")


def cleanup(db: Session, settings: Settings) -> dict[str, int]:
    """Delete what has expired; how many rows of each kind went. The caller commits."""
    stamp = now()
    signed_token_life = settings.max_signed_token_ttl
    live_refresh_token = exists().where(RefreshToken.grant_id == Grant.id)
    unproven = _unproven_registration(stamp)
    statements: dict[str, Delete] = {}
    if db.scalar(select(exists().where(unproven))):
        statements["unproven_registrations"] = delete(User).where(unproven)
    statements |= {
        "authorization_requests": delete(AuthorizationRequest).where(AuthorizationRequest.expires_at < stamp),
        "authorization_codes": delete(AuthorizationCode).where(AuthorizationCode.expires_at < stamp - CODE_RETENTION),
        "refresh_tokens": delete(RefreshToken).where(RefreshToken.expires_at < stamp),
        "grants": delete(Grant).where(
            ~live_refresh_token,
            Grant.created_at < stamp - signed_token_life,
            or_(Grant.revoked_at.is_(None), Grant.revoked_at < stamp - signed_token_life),
        ),
        "revoked_access_tokens": delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < stamp),
        "client_assertions": delete(ClientAssertion).where(ClientAssertion.expires_at < stamp),
        "browser_sessions": delete(BrowserSession).where(
            or_(
                BrowserSession.expires_at < stamp - ENDED_SESSION_RETENTION,
                BrowserSession.ended_at < stamp - ENDED_SESSION_RETENTION,
            )
        ),
        "pending_sign_ins": delete(PendingSignIn).where(PendingSignIn.expires_at < stamp),
        "one_time_codes": delete(OneTimeCode).where(OneTimeCode.expires_at < stamp - CODE_RETENTION),
        "action_tokens": delete(ActionToken).where(ActionToken.expires_at < stamp),
        "outbox": delete(OutboxMessage).where(
            or_(
                and_(OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < stamp - MESSAGE_RETENTION),
                and_(OutboxMessage.failed_at.is_not(None), OutboxMessage.failed_at < stamp - MESSAGE_RETENTION),
            )
        ),
    }
    if settings.audit_retention_days:
        cutoff = stamp - settings.audit_retention_days * DAY
        statements["audit_events"] = delete(AuditEvent).where(AuditEvent.at < cutoff)
    removed = {
        name: changed_rows(db.execute(statement.execution_options(synchronize_session=False)))
        for name, statement in statements.items()
    }
    # A class outlives its last hash when that person reset their password or left; sign-ins would
    # go on paying for it.
    removed["legacy_hash_classes"] = forget_cost_classes(db)
    return {name: count for name, count in removed.items() if count}


def _unproven_registration(stamp: int) -> ColumnElement[bool]:
    """Deleting people moves their change counter (:mod:`idp.storage.people_changes`), which
    empties every process's cache of people, even when no row goes: so they are looked for first,
    and deleted only when there are some."""
    live_verification_link = exists().where(
        ActionToken.user_id == User.id,
        ActionToken.purpose == VERIFY_EMAIL,
        ActionToken.used_at.is_(None),
        ActionToken.expires_at > stamp,
    )
    return and_(
        User.registration_browser_hash.is_not(None),
        User.email_verified.is_(False),
        User.phone_verified.is_(False),
        User.created_at < stamp - REGISTRATION_LIFETIME,
        ~live_verification_link,
    )


def _cleanup_once(ctx: Context) -> dict[str, int]:
    with ctx.db.begin() as db:
        return cleanup(db, ctx.settings)


async def run_housekeeping(ctx: Context, stop: asyncio.Event, interval: float = 3600.0) -> None:
    """Clean up every ``interval`` seconds in every process; deleting twice is harmless."""
    outage = OutageLog(log, "housekeeping")
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            removed = await asyncio.to_thread(_cleanup_once, ctx)
        except Exception as exc:  # noqa: BLE001 - a database hiccup must not end housekeeping for good
            outage.failed(exc)
            continue
        outage.succeeded()
        if removed:
            log.info("housekeeping removed %s", removed)
