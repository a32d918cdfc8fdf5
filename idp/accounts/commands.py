"""The account operations a signed-in person can run, once each for every surface.

The hosted pages, the account API and any surface to come call these and nothing else for them:
each command calls the services, writes its audit events in the caller's transaction, and raises
an :class:`~.errors.AccountError` that says itself whether its changes are kept. The surface
authenticates, takes the person's row lock, commits, and puts the answer into its own words. A
command whose work is slow (hashing a new password) is given the lock to take itself once that
work is done: a function that locks the row and gives the actor as it stands then, or raises when
it may no longer act.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event, mask
from ..context import Context
from ..storage import User
from . import email_change, first_password, profile
from .codes_vocabulary import Channel
from .errors import NoPendingPhone, SessionNotFound
from .profile import OthersEnded
from .reauthentication import NotReauthenticated, RecentSignIn, confirm, prove
from .recovery import change_password as change_password_service


@dataclass(frozen=True)
class Actor:
    """The person a command acts for, in which session and through which client, and what the
    audit trail keeps of the request that asked."""

    user: User
    session_id: str | None
    auth_time: int | None
    client_id: str | None
    ip: str | None
    user_agent: str | None

    def record(self, db: Session, event: Event, outcome: str, **detail: Any) -> None:
        audit.record(
            db,
            event,
            outcome=outcome,
            user_id=self.user.id,
            client_id=self.client_id,
            ip=self.ip,
            user_agent=self.user_agent,
            detail=detail,
        )


def update_name(db: Session, actor: Actor, name: str) -> None:
    """An empty name removes it."""
    profile.update_name(db, actor.user, name)
    actor.record(db, Event.PROFILE_UPDATED, "success", fields=["name"])


def add_phone(
    ctx: Context, db: Session, actor: Actor, raw_phone: str, current_password: str, lock: Callable[[], Actor]
) -> str:
    """Send a code to the number, once the person showed it is them; returns it as E.164. The
    number becomes theirs only when the code comes back (:func:`verify_phone`). ``lock`` takes the
    person's row lock once the password is checked."""
    purpose = profile.VERIFY_PHONE
    try:
        phone = profile.start_phone_verification(
            ctx, db, actor.user, raw_phone, current_password, actor.auth_time, lambda: lock().user
        )
    except NotReauthenticated as exc:
        actor.record(db, Event.CODE_SENT, "failure", channel=Channel.SMS, purpose=purpose, reason=exc.reason)
        raise
    actor.record(db, Event.CODE_SENT, "success", channel=Channel.SMS, purpose=purpose, phone=mask(phone))
    return phone


def pending_phone(db: Session, actor: Actor) -> str:
    """The number waiting for its code; raises :class:`~.errors.NoPendingPhone`."""
    phone = profile.pending_phone(db, actor.user)
    if phone is None:
        raise NoPendingPhone
    return phone


def resend_phone_code(ctx: Context, db: Session, actor: Actor) -> str:
    phone = pending_phone(db, actor)
    profile.send_phone_code(ctx, db, actor.user, phone)
    purpose = profile.VERIFY_PHONE
    actor.record(db, Event.CODE_SENT, "success", channel=Channel.SMS, purpose=purpose, phone=mask(phone))
    return phone


def verify_phone(ctx: Context, db: Session, actor: Actor, code: str) -> str:
    """The pending number becomes the person's verified one if ``code`` is the one sent to it."""
    phone = pending_phone(db, actor)
    try:
        profile.confirm_phone(ctx, db, actor.user, phone, code)
    except (profile.WrongCode, profile.PhoneUnavailable) as exc:
        reason = "wrong_code" if isinstance(exc, profile.WrongCode) else "held_by_another_account"
        actor.record(db, Event.PHONE_VERIFIED, "failure", phone=mask(phone), reason=reason)
        raise
    actor.record(db, Event.PHONE_VERIFIED, "success", phone=mask(phone))
    return phone


def remove_phone(ctx: Context, db: Session, actor: Actor) -> str:
    """Codes no longer go to the number, and it no longer signs the person in."""
    phone = profile.remove_phone(ctx, db, actor.user)
    actor.record(db, Event.PHONE_REMOVED, "success", phone=mask(phone))
    return phone


def end_session(db: Session, actor: Actor, session_id: str) -> bool:
    """End one of the person's live sessions; whether it was the actor's own."""
    if not profile.end_one(db, actor.user, session_id):
        raise SessionNotFound
    current = session_id == actor.session_id
    actor.record(db, Event.SESSION_ENDED, "success", session_id=session_id, current=current)
    return current


def end_other_sessions(ctx: Context, db: Session, actor: Actor) -> OthersEnded:
    """Sign out everywhere else; a phone number nobody vouched for since it was added goes too."""
    ended = profile.end_others(ctx, db, actor.user, actor.session_id or "")
    for session_id in ended.sessions:
        actor.record(db, Event.SESSION_ENDED, "success", session_id=session_id, current=False)
    if ended.phone_removed is not None:
        phone = mask(ended.phone_removed)
        actor.record(db, Event.PHONE_REMOVED, "success", phone=phone, reason="added_since_confirmation")
    return ended


def change_password(
    ctx: Context, db: Session, actor: Actor, current_password: str, new_password: str, lock: Callable[[], Actor]
) -> int:
    """Every other session ends and every grant not made in the actor's session is revoked;
    returns how many sessions ended. ``lock`` takes the person's row lock once the passwords are
    checked and hashed (:mod:`.recovery`)."""
    return change_password_service(
        db,
        ctx.settings,
        ctx.secret_key,
        actor.user,
        current_password,
        new_password,
        actor.session_id,
        lambda: lock().user,
        ip=actor.ip,
        user_agent=actor.user_agent,
    )


def change_email(
    ctx: Context, db: Session, actor: Actor, raw_email: str, current_password: str, lock: Callable[[], Actor]
) -> str:
    """A link goes to the new address, or its owner is told when another account has it: the same
    answer either way. The address changes only when the link is followed. ``lock`` takes the
    person's row lock once the password is checked."""
    event = email_change.REQUEST_EVENT
    email = email_change.parse(actor.user, raw_email)
    try:
        proof = prove(
            db,
            ctx.settings,
            ctx.secret_key,
            actor.user,
            current_password,
            recent_sign_in=RecentSignIn.WITHOUT_PASSWORD,
            auth_time=actor.auth_time,
        )
    except NotReauthenticated as exc:
        actor.record(db, event, "failure", reason=exc.reason)
        raise
    user = lock().user
    confirm(user, proof)
    try:
        requested = email_change.request_change(ctx, db, user, email)
    except email_change.TooManyRequests:
        actor.record(db, event, "failure", recipient=mask(email), reason="rate_limited")
        raise
    detail = {"address": requested.address, "recipient": mask(email)}
    if requested.taken:
        actor.record(db, event, "failure", reason="address_taken", **detail)
    else:
        actor.record(db, event, "success", **detail)
    return email


def send_password_code(ctx: Context, db: Session, actor: Actor) -> str:
    """The code a first password needs goes to the verified address; returns the address."""
    email = first_password.send_code(ctx, db, actor.user)
    actor.record(db, Event.CODE_SENT, "success", channel=Channel.EMAIL, purpose=first_password.PURPOSE)
    return email


def set_password(ctx: Context, db: Session, actor: Actor, code: str, password: str, lock: Callable[[], Actor]) -> int:
    """A first password, with the emailed code; returns how many other sessions ended. A password
    the policy refuses leaves the code usable. ``lock`` takes the person's row lock once the
    password is checked and hashed (:mod:`.first_password`)."""
    try:
        ended = first_password.set_first_password(
            ctx, db, actor.user, code, password, actor.session_id, lambda: lock().user
        )
    except first_password.WrongCode:
        actor.record(db, Event.PASSWORD_SET, "failure", reason="wrong_code")
        raise
    actor.record(db, Event.PASSWORD_SET, "success", sessions_ended=ended)
    return ended
