"""Six-digit one-time codes sent by email or SMS.

A code comes from ``secrets``, is kept only as an HMAC under ``IDP_SECRET_KEY`` (six digits are
too few for a plain hash: a leaked table would be brute-forced in a moment), lives ``IDP_OTP_TTL``
seconds, and is spent by the third wrong try. A new code replaces the one before it. At most three
codes of one purpose go to one identifier in two minutes, counted in the database so that every
process agrees. Each purpose has a budget of its own: anyone may ask for sign-in codes to an
address, and that must not spend the codes its owner needs for a second factor after their
password, or to verify a phone.

Every code sent by email or SMS goes out through :func:`send`, or :func:`issue` then
:func:`deliver` where a code must be made without being sent.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event
from ..context import Context
from ..messaging.outbox import enqueue
from ..metrics import CODES_SENT
from ..security.digests import keyed_digest, new_id
from ..storage import OneTimeCode, User, now, spend_once
from . import sms_budget
from .codes_vocabulary import Channel, Purpose
from .digits import ascii_digits
from .errors import AccountError, Code

RESEND_LIMITS = ((3, 120), (10, 3600))
"""At most 3 codes for one purpose to one address or number in 2 minutes, and 10 in an hour: the
per-address rate limits are loose for a carrier's shared address, so it is these that keep one
person's phone or inbox from being flooded, whoever asks. (Codes are kept an hour past their
expiry, so an hour of them can be counted.)"""


class ResendTooSoon(AccountError):
    """Too many codes for this purpose went to this identifier lately; ``wait`` seconds until the
    next may go."""

    code = Code.TOO_MANY_CODES

    def __init__(self, wait: int) -> None:
        super().__init__(wait=wait)

    @property
    def wait(self) -> int:
        return int(self.data["wait"] or 0)


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: int
    purpose: Purpose
    user_id: str | None


def _digest(secret_key: str, purpose: Purpose, identifier: str, code: str) -> str:
    return keyed_digest(secret_key, f"otp:{purpose}:{identifier}:{code}")


def resend_wait(db: Session, identifier: str, purpose: Purpose) -> int:
    """Seconds before another code for ``purpose`` may go to ``identifier`` (:data:`RESEND_LIMITS`);
    0 when one may go now."""
    stamp = now()
    most = max(count for count, _ in RESEND_LIMITS)
    longest = max(window for _, window in RESEND_LIMITS)
    newest_first = list(
        db.scalars(
            select(OneTimeCode.created_at)
            .where(
                OneTimeCode.identifier == identifier,
                OneTimeCode.purpose == purpose,
                OneTimeCode.created_at > stamp - longest,
            )
            .order_by(OneTimeCode.created_at.desc())
            .limit(most)
        )
    )
    waits = [
        newest_first[count - 1] + window - stamp
        for count, window in RESEND_LIMITS
        if len(newest_first) >= count and newest_first[count - 1] > stamp - window
    ]
    return max(1, *waits) if waits else 0


def issue(ctx: Context, db: Session, *, purpose: Purpose, identifier: str, user_id: str | None) -> IssuedCode:
    """A new code for ``purpose`` and ``identifier``, of ``IDP_OTP_LENGTH`` digits, living
    ``IDP_OTP_TTL``; every earlier live one of the same purpose dies."""
    wait = resend_wait(db, identifier, purpose)
    if wait:
        raise ResendTooSoon(wait)
    stamp = now()
    db.execute(
        update(OneTimeCode)
        .where(
            OneTimeCode.identifier == identifier,
            OneTimeCode.purpose == purpose,
            OneTimeCode.consumed_at.is_(None),
        )
        .values(consumed_at=stamp)
    )
    length, ttl = ctx.settings.otp_length, ctx.settings.otp_ttl
    code = f"{secrets.randbelow(10**length):0{length}d}"
    db.add(
        OneTimeCode(
            id=new_id(),
            purpose=purpose,
            identifier=identifier,
            user_id=user_id,
            code_hash=_digest(ctx.secret_key, purpose, identifier, code),
            attempts=0,
            created_at=stamp,
            expires_at=stamp + ttl,
        )
    )
    db.flush()
    return IssuedCode(code=code, expires_at=stamp + ttl, purpose=purpose, user_id=user_id)


def deliver(ctx: Context, db: Session, issued: IssuedCode, *, channel: str, to: str, template: str) -> None:
    """Queue ``issued`` to ``to`` by ``channel`` (``email`` or ``sms``) in the message ``template``:
    the one place a code leaves, so the one place ``code_sent`` is recorded."""
    message = {"code": issued.code, "minutes": max(1, ctx.settings.otp_ttl // 60)}
    recipient = db.get(User, issued.user_id) if issued.user_id is not None else None
    locale = recipient.locale if recipient is not None else None
    if channel == Channel.EMAIL:
        enqueue(db, ctx.secret_key, Channel.EMAIL, to, template, message, useful_until=issued.expires_at, locale=locale)
    else:
        enqueue(db, ctx.secret_key, Channel.SMS, to, template, message, useful_until=issued.expires_at, locale=locale)
    audit.record(
        db,
        Event.CODE_SENT,
        outcome="success",
        user_id=issued.user_id,
        detail={"channel": channel, "purpose": issued.purpose},
    )
    CODES_SENT.labels(channel=channel).inc()


def send(
    ctx: Context,
    db: Session,
    *,
    purpose: Purpose,
    channel: str,
    identifier: str,
    user_id: str | None,
    template: str = "one_time_code",
) -> None:
    """A new code for ``purpose``, sent to ``identifier``; raises :class:`ResendTooSoon`, and
    :class:`~.sms_budget.SmsRefused` for a text message that may not go."""
    issued = issue(ctx, db, purpose=purpose, identifier=identifier, user_id=user_id)
    if channel == Channel.SMS:
        sms_budget.spend(ctx, identifier)
    deliver(ctx, db, issued, channel=channel, to=identifier, template=template)


def cancel(db: Session, identifier: str) -> None:
    """Every live code sent to ``identifier`` dies, whatever its purpose: the address or number no
    longer belongs to the person the codes were for."""
    db.execute(
        update(OneTimeCode)
        .where(OneTimeCode.identifier == identifier, OneTimeCode.consumed_at.is_(None))
        .values(consumed_at=now())
    )


def verify(ctx: Context, db: Session, *, purpose: Purpose, identifier: str, code: str) -> OneTimeCode | None:
    """The spent code when ``code`` is right; ``None`` otherwise, counting the try.

    Both outcomes are single conditional UPDATEs, so a code cannot be used twice nor tried more
    than ``IDP_OTP_ATTEMPTS`` times, even by requests racing in several processes.
    """
    stamp = now()
    live = db.scalar(
        select(OneTimeCode)
        .where(
            OneTimeCode.identifier == identifier,
            OneTimeCode.purpose == purpose,
            OneTimeCode.consumed_at.is_(None),
            OneTimeCode.expires_at > stamp,
        )
        .order_by(OneTimeCode.created_at.desc())
        .limit(1)
    )
    if live is None:
        return None
    candidate = ascii_digits(code.strip())
    presented = _digest(ctx.secret_key, purpose, identifier, candidate if len(candidate) <= 16 else "")
    if hmac.compare_digest(presented.encode(), live.code_hash.encode()):
        spent = spend_once(
            db, OneTimeCode, OneTimeCode.id == live.id, OneTimeCode.consumed_at.is_(None), consumed_at=stamp
        )
        return live if spent else None
    db.execute(
        update(OneTimeCode)
        .where(OneTimeCode.id == live.id, OneTimeCode.consumed_at.is_(None))
        .values(
            attempts=OneTimeCode.attempts + 1,
            consumed_at=case((OneTimeCode.attempts + 1 >= ctx.settings.otp_attempts, stamp), else_=None),
        )
    )
    return None
