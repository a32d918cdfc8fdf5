"""The delivery worker: every process runs one, and the database decides who sends what.

A worker claims one due message at a time with a conditional UPDATE, so several processes (or
threads) never send the same message twice; a claim lasts longer than any send can take and lapses
if the process dies, so a crash loses nothing. A failed send is retried with exponential backoff,
for as long as the message is useful (``useful_until``, set by whoever queued it): an outage of the
mail or SMS provider, however long, loses no message that is still worth sending when it ends. One
no longer useful (a code past its expiry, a link past its lifetime) is dropped unsent: an audit
event, an error line and ``idp_deliveries_failed_total`` record it, and the person asks again.
Sealed bodies are cleared once a message is sent or dropped: nothing keeps the secret after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.fernet import InvalidToken
from sqlalchemy import ColumnElement, or_, select, update

from .. import audit
from ..accounts.codes_vocabulary import Channel
from ..audit import Event
from ..metrics import DELIVERIES_FAILED
from ..observability.outages import OutageLog
from ..security.sealing import OUTBOX, Sealer
from ..storage import OutboxMessage, now, spend_once
from .email import Email
from .errors import DeliveryError
from .sms import Sms

if TYPE_CHECKING:
    from ..context import Context

FIRST_RETRY = 5
MAX_RETRY = 120
CLAIM_SECONDS = 120
BATCH = 20
log = logging.getLogger("idp.outbox")


@dataclass(frozen=True)
class Claimed:
    """What a worker needs of a message it won, read inside the claim's transaction."""

    id: str
    channel: str
    recipient: str
    body: str
    attempts: int
    useful_until: int
    last_error: str | None


def retry_delay(attempts: int, life_left: int) -> int:
    """5 s after the first failure, doubling each time, never more than 2 minutes: a provider back
    from an outage gets every message within 2 minutes. Never more than a quarter of the life the
    message has left either (but never under 5 s), so that a code of a few minutes is tried often
    enough near its end to arrive soon after the provider is back, not after it expired."""
    doubled: int = FIRST_RETRY * 2 ** (attempts - 1)
    return max(FIRST_RETRY, min(doubled, MAX_RETRY, life_left // 4))


def _available(stamp: int) -> tuple[ColumnElement[bool], ...]:
    """Not yet sent or dropped, due, and claimed by no live worker."""
    return (
        OutboxMessage.sent_at.is_(None),
        OutboxMessage.failed_at.is_(None),
        OutboxMessage.next_attempt_at <= stamp,
        or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < stamp),
    )


def deliver_due(ctx: Context, limit: int = BATCH) -> int:
    """Send up to ``limit`` due messages; returns how many were sent."""
    with ctx.db() as db:
        due = list(
            db.scalars(
                select(OutboxMessage.id).where(*_available(now())).order_by(OutboxMessage.next_attempt_at).limit(limit)
            )
        )
    sent = 0
    for message_id in due:
        message = _claim(ctx, message_id)
        if message is None:
            continue
        if message.useful_until <= now():
            _drop(ctx, message)
        elif _deliver(ctx, message):
            sent += 1
    return sent


def _claim(ctx: Context, message_id: str) -> Claimed | None:
    """Only the UPDATE that still finds the message available wins it."""
    stamp = now()
    with ctx.db.begin() as db:
        if not spend_once(
            db, OutboxMessage, OutboxMessage.id == message_id, *_available(stamp), claimed_until=stamp + CLAIM_SECONDS
        ):
            return None
        row = db.get_one(OutboxMessage, message_id)
        assert row.body is not None
        return Claimed(row.id, row.channel, row.recipient, row.body, row.attempts, row.useful_until, row.last_error)


def _deliver(ctx: Context, message: Claimed) -> bool:
    try:
        _send(ctx, message)
    except DeliveryError as exc:
        _failed(ctx, message, str(exc))
        return False
    except Exception as exc:  # noqa: BLE001 - a bug in one adapter must not leave the message claimed for good
        log.exception("outbox message %s: unexpected error while sending", message.id)
        _failed(ctx, message, f"unexpected {type(exc).__name__}")
        return False
    with ctx.db.begin() as db:
        db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id)
            .values(sent_at=now(), body=None, claimed_until=None, attempts=message.attempts + 1, last_error=None)
            .execution_options(synchronize_session=False)
        )
    return True


def _send(ctx: Context, message: Claimed) -> None:
    try:
        content = json.loads(Sealer(ctx.secret_key, OUTBOX).open(message.body))
    except InvalidToken:
        raise DeliveryError("the body cannot be opened: was IDP_SECRET_KEY changed?") from None
    if message.channel == Channel.EMAIL:
        ctx.email_backend.send(Email(message.recipient, content["subject"], content["text"], content["html"]))
    else:
        ctx.sms_backend.send(Sms(message.recipient, content["text"]))


def _failed(ctx: Context, message: Claimed, error: str) -> None:
    """The next attempt waits its backoff, and never past the message's usefulness: it is then due
    at that instant, to be dropped, not left waiting."""
    attempts = message.attempts + 1
    stamp = now()
    delay = retry_delay(attempts, message.useful_until - stamp)
    with ctx.db.begin() as db:
        db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id)
            .values(
                attempts=attempts,
                claimed_until=None,
                last_error=error[:200],
                next_attempt_at=min(stamp + delay, message.useful_until),
            )
            .execution_options(synchronize_session=False)
        )
    log.warning("outbox message %s: attempt %d failed (%s), retrying in %d s", message.id, attempts, error, delay)


def _drop(ctx: Context, message: Claimed) -> None:
    """Too late to be of use: a code past its expiry would be refused, a link past its lifetime
    leads nowhere. Recorded so that an operator sees what an outage cost."""
    with ctx.db.begin() as db:
        db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id)
            .values(failed_at=now(), body=None, claimed_until=None)
            .execution_options(synchronize_session=False)
        )
        audit.record(
            db,
            Event.MESSAGE_FAILED,
            outcome="failure",
            detail={
                "message_id": message.id,
                "channel": message.channel,
                "recipient": audit.mask(message.recipient),
                "attempts": message.attempts,
                "error": message.last_error,
                "reason": "expired",
            },
        )
    log.error(
        "outbox message %s (%s to %s) dropped unsent: no longer useful after %d attempts (last error: %s)",
        message.id,
        message.channel,
        audit.mask(message.recipient),
        message.attempts,
        message.last_error,
    )
    DELIVERIES_FAILED.labels(channel=message.channel).inc()


async def run_worker(ctx: Context, stop: asyncio.Event, interval: float = 1.0) -> None:
    """Deliver due messages every ``interval`` seconds until ``stop`` is set.

    Sending runs in the event loop's default executor, apart from the thread pool that serves
    requests, so a slow provider never holds up a page. A full batch is followed by the next at once.
    While the database is down every round fails: the log says so once, not every second.
    """
    outage = OutageLog(log, "outbox worker")
    while not stop.is_set():
        sent = 0
        try:
            sent = await asyncio.to_thread(deliver_due, ctx, BATCH)
        except Exception as exc:  # noqa: BLE001 - a database hiccup must not end delivery for the life of the process
            outage.failed(exc)
        else:
            outage.succeeded()
        if sent == BATCH:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
