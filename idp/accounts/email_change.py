"""A signed-in person changes (or adds) their email address, proven by a link sent to the new one.

Asking takes the current password, as a password change does (and, as there, none is checked
while wrong ones keep the account locked); an account without a password must have signed in
recently instead (:mod:`.reauthentication`), so that a session left open is not enough to hand
the account to another mailbox. The current address is told at once (OWASP's Authentication Cheat
Sheet, "Changing A User's Registered Email Address"): should someone else have asked, the owner has
until the link is followed to reset the password, which spends the link. Nothing changes until the
link sent to the new address is followed: then the address becomes the person's, verified, the old
address is told, and the codes still live for it die, so whoever holds the old mailbox signs in no
more.

An address another account already has gets the same answer as a free one: a link is made but
never sent, so the person's page shows it waiting all the same, and the address's owner is told
that someone tried. The address is checked again when a link is followed, so one taken in the
meantime fails cleanly. Asking is limited per address like asking for a new verification link
(:mod:`.registration`, ``IDP_RATE_LIMIT_EMAIL_CHANGE_ADDRESS``).

A link (:mod:`.links`) lives ``LINK_LIFETIME``; a new request spends the links sent before it.

Sessions stay as they are when the address changes. Ending the others would not stop whoever
asked with a stolen session and the password (it would sign the owner out instead), and the link
may be followed in a browser signed in as no one; the notices to the old address are what lets the
owner act, and a reset ends every session. A second factor by email goes to the new address from
then on: changing the address takes what turning the second factor off takes, the password (or,
without one, a fresh sign-in).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event, mask
from ..context import Context
from ..messaging.outbox import enqueue, notice_useful_until
from ..security.rate_limits import Limit
from ..storage import ActionToken, User, now
from . import links, otp
from .codes_vocabulary import Channel, Purpose
from .errors import AccountError, Code
from .registration import address_key, requests_wait
from .users import UserError, normalize_email

PURPOSE = Purpose.CHANGE_EMAIL
LINK_LIFETIME = 24 * 60 * 60
REQUEST_EVENT = Event.EMAIL_CHANGE_REQUESTED


class EmailChangeError(AccountError):
    """The address cannot be asked for: ``not_an_email`` or ``same_email``."""

    code = Code.INVALID_EMAIL


class TooManyRequests(AccountError):
    """Too many requests named this address lately; ``wait`` seconds until the next may go. The
    refusal's audit event is kept."""

    code = Code.TOO_MANY_EMAILS
    keeps_changes = True

    def __init__(self, wait: int) -> None:
        super().__init__(wait=wait)


class LinkInvalid(AccountError):
    """The link is unknown, used or expired, or its account is gone or disabled; the refusal is
    recorded."""

    code = Code.INVALID_LINK
    keeps_changes = True

    fixed_reason = "email_change"


class AddressTaken(AccountError):
    """Another account took the address after the link was sent; the link is spent, and that is
    kept with the refusal's record."""

    code = Code.EMAIL_TAKEN
    keeps_changes = True


@dataclass(frozen=True)
class Requested:
    """``address`` is the keyed digest that names the address in the request's audit event;
    ``taken`` is for the audit log only, never for the person."""

    address: str
    taken: bool


@dataclass(frozen=True)
class Changed:
    user: User
    old_email: str | None


def parse(user: User, raw_email: str) -> str:
    """The normalized new address; raises :class:`EmailChangeError`."""
    try:
        email = normalize_email(raw_email)
    except UserError:
        raise EmailChangeError("not_an_email") from None
    if email == user.email:
        raise EmailChangeError("same_email")
    return email


def request_change(ctx: Context, db: Session, user: User, email: str) -> Requested:
    """Send the link to ``email`` (as :func:`parse` made it), or tell its owner when another
    account has it; either way the current address is told. Raises :class:`TooManyRequests` alike
    for free and taken addresses."""
    key = address_key(ctx.secret_key, email)
    wait = requests_wait(ctx, Limit.EMAIL_CHANGE_ADDRESS, key)
    if wait:
        raise TooManyRequests(wait)
    links.cancel(db, user.id, PURPOSE)
    token = links.issue(db, PURPOSE, user.id, email, LINK_LIFETIME)
    db.flush()
    hours = LINK_LIFETIME // 3600
    if user.email is not None:
        enqueue(
            db,
            ctx.secret_key,
            Channel.EMAIL,
            user.email,
            "email_change_requested",
            {"new_email": mask(email), "hours": hours, "reset_link": f"{ctx.settings.issuer}/password/forgot"},
            useful_until=notice_useful_until(),
            locale=user.locale,
        )
    owner = db.scalar(select(User).where(User.email == email))
    if owner is not None:
        # The link is made all the same, never sent: the person's page shows it waiting either way.
        enqueue(
            db,
            ctx.secret_key,
            Channel.EMAIL,
            email,
            "email_change_taken",
            {"login_link": f"{ctx.settings.issuer}/login"},
            useful_until=notice_useful_until(),
            locale=owner.locale,
        )
        return Requested(key, taken=True)
    link = links.url(ctx.settings.issuer, "/account/email/confirm", token)
    enqueue(
        db,
        ctx.secret_key,
        Channel.EMAIL,
        email,
        "email_change",
        {"link": link, "hours": hours},
        useful_until=now() + LINK_LIFETIME,
        locale=user.locale,
    )
    return Requested(key, taken=False)


def pending_email(db: Session, user: User) -> str | None:
    """The address a live link was sent to for this person, if any."""
    return db.scalar(
        select(ActionToken.email)
        .where(
            ActionToken.user_id == user.id,
            ActionToken.purpose == PURPOSE,
            ActionToken.used_at.is_(None),
            ActionToken.expires_at > now(),
        )
        .order_by(ActionToken.created_at.desc())
        .limit(1)
    )


def find_link(db: Session, token: str | None) -> ActionToken | None:
    """The live link this token belongs to, left unspent, of an account that may still use it: for
    the page that asks to confirm it."""
    link = links.find(db, PURPOSE, token)
    user = db.get(User, link.user_id) if link is not None else None
    return link if user is not None and not user.disabled else None


def confirm(ctx: Context, db: Session, token: str | None) -> Changed:
    """Spend the link and make its address the person's, verified; the old address is told.

    Raises :class:`LinkInvalid`, or :class:`AddressTaken` with the link spent. Every other live
    link of the person's, for the old address or the new, is spent too, and so is every live code
    sent to the old address. Each outcome is recorded.
    """
    link = links.spend(db, PURPOSE, token)
    user = db.get(User, link.user_id) if link is not None else None
    if link is None or user is None or user.disabled:
        audit.record(db, Event.EMAIL_CHANGED, outcome="failure", detail={"reason": "invalid_link"})
        raise LinkInvalid
    stamp = now()
    old_email = user.email
    try:
        with db.begin_nested():
            taken = db.scalar(select(User.id).where(User.email == link.email, User.id != user.id)) is not None
            if not taken:
                user.email = link.email
                user.email_verified = True
                user.updated_at = stamp
                db.flush()
    except IntegrityError:
        taken = True
    if taken:
        reason = {"reason": "address_taken"}
        audit.record(db, Event.EMAIL_CHANGED, outcome="failure", user_id=link.user_id, detail=reason)
        raise AddressTaken
    moved = {"from": mask(old_email) if old_email else None, "to": mask(link.email)}
    audit.record(db, Event.EMAIL_CHANGED, outcome="success", user_id=user.id, detail=moved)
    links.cancel(db, user.id)
    if old_email is not None:
        otp.cancel(db, old_email)
        enqueue(
            db,
            ctx.secret_key,
            Channel.EMAIL,
            old_email,
            "email_changed",
            {"new_email": mask(link.email)},
            useful_until=notice_useful_until(),
            locale=user.locale,
        )
    db.flush()
    return Changed(user, old_email)
