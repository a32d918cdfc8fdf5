"""``idp audit``: list or export audit events as JSON lines, filtered by person, client, event and time."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from sqlalchemy import select

from ..settings import Settings
from ..storage import AuditEvent
from .context import open_context
from .output import emit


def _moment(value: str) -> int:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date or time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _limit(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
    return int(value)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="a person's id")
    parser.add_argument("--client", help="a client's id")
    parser.add_argument("--event", action="append", help="an event name, e.g. sign_in (repeatable)")
    parser.add_argument("--since", type=_moment, help="from this time on (ISO 8601, UTC if no zone)")
    parser.add_argument("--until", type=_moment, help="before this time (ISO 8601)")
    parser.add_argument("--limit", type=_limit, help="at most this many events, the newest of them")
    parser.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    query = select(AuditEvent)
    if args.user:
        query = query.where(AuditEvent.user_id == args.user)
    if args.client:
        query = query.where(AuditEvent.client_id == args.client)
    if args.event:
        query = query.where(AuditEvent.event.in_(args.event))
    if args.since is not None:
        query = query.where(AuditEvent.at >= args.since)
    if args.until is not None:
        query = query.where(AuditEvent.at < args.until)
    if args.limit:
        newest = query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(args.limit).subquery()
        query = select(AuditEvent).join(newest, AuditEvent.id == newest.c.id)
    ctx = open_context(settings)
    with ctx.db() as db:
        for event in db.scalars(query.order_by(AuditEvent.at, AuditEvent.id).execution_options(yield_per=500)):
            emit(
                {
                    "id": event.id,
                    "at": datetime.fromtimestamp(event.at, UTC).isoformat(),
                    "event": event.event,
                    "outcome": event.outcome,
                    "user_id": event.user_id,
                    "client_id": event.client_id,
                    "ip": event.ip,
                    "user_agent": event.user_agent,
                    "detail": event.detail,
                }
            )
    return 0
