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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event, mask
from ..context import Context
from ..storage import User, now
from . import deletion, email_change, first_password, personal_data, profile, second_factor
from .codes_vocabulary import Channel, Purpose
from .errors import NoPendingPhone, SessionNotFound, WrongCode
from .profile import OthersEnded
from .reauthentication import NotReauthenticated, RecentSignIn, confirm, prove
from .recovery import change_password as change_password_service
from .second_factor import Enrolment
from .sign_in_methods import check_password_allowed


@dataclass(frozen=True)
class Actor:
    """The person a command acts for, in which session and through which client, and what the
    audit trail keeps of the request that asked."""

    user: User
    session_id: str | None
    auth_time: int | None
    client_id: str | None

    def record(self, db: Session, event: Event, outcome: str, **detail: Any) -> None:
        audit.record(
            db,
            event,
            outcome=outcome,
            user_id=self.user.id,
            client_id=self.client_id,
            detail=detail,
        )


def update_profile(
    db: Session, actor: Actor, changes: Mapping[str, str], address: Mapping[str, object] | None = None
) -> list[str]:
    """Change what ``changes`` names of the person's profile (:data:`.profile.EDITABLE`), and
    their ``address`` when one is given; the change is audited with the fields that changed, none
    when nothing did. Returns those fields."""
    changed = profile.update_profile(db, actor.user, changes, address)
    if changed:
        actor.record(db, Event.PROFILE_UPDATED, "success", fields=changed)
    return changed


def add_phone(
    ctx: Context, db: Session, actor: Actor, raw_phone: str, current_password: str, lock: Callable[[], Actor]
) -> str:
    """Send a code to the number, once the person showed it is them; returns it as E.164. The
    number becomes theirs only when the code comes back (:func:`verify_phone`). ``lock`` takes the
    person's row lock once the password is checked."""
    try:
        return profile.start_phone_verification(
            ctx, db, actor.user, raw_phone, current_password, actor.auth_time, lambda: lock().user
        )
    except NotReauthenticated as exc:
        purpose = profile.VERIFY_PHONE
        actor.record(db, Event.CODE_SENT, "failure", channel=Channel.SMS, purpose=purpose, reason=exc.reason)
        raise


def pending_phone(db: Session, actor: Actor) -> str:
    """The number waiting for its code; raises :class:`~.errors.NoPendingPhone`."""
    phone = profile.pending_phone(db, actor.user)
    if phone is None:
        raise NoPendingPhone
    return phone


def resend_phone_code(ctx: Context, db: Session, actor: Actor) -> str:
    phone = pending_phone(db, actor)
    profile.send_phone_code(ctx, db, actor.user, phone)
    return phone


def verify_phone(ctx: Context, db: Session, actor: Actor, code: str) -> str:
    """The pending number becomes the person's verified one if ``code`` is the one sent to it."""
    phone = pending_phone(db, actor)
    try:
        profile.confirm_phone(ctx, db, actor.user, phone, code)
    except (WrongCode, profile.PhoneUnavailable) as exc:
        reason = "wrong_code" if isinstance(exc, WrongCode) else "held_by_another_account"
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
    )


def change_email(
    ctx: Context, db: Session, actor: Actor, raw_email: str, current_password: str, lock: Callable[[], Actor]
) -> str:
    """A link goes to the new address, or its owner is told when another account has it: the same
    answer either way. The address changes only when the link is followed. ``lock`` takes the
    person's row lock once the password is checked."""
    event = email_change.REQUEST_EVENT
    email = email_change.parse(actor.user, raw_email)
    user = _prove(ctx, db, actor, lock, current_password, RecentSignIn.WITHOUT_PASSWORD, event)
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
    """The code a first password needs goes to the verified address; returns the address. With
    password sign-in off a password would sign nobody in: no code goes."""
    check_password_allowed(ctx.settings)
    return first_password.send_code(ctx, db, actor.user)


def set_password(ctx: Context, db: Session, actor: Actor, code: str, password: str, lock: Callable[[], Actor]) -> int:
    """A first password, with the emailed code; returns how many other sessions ended. A password
    the policy refuses leaves the code usable. ``lock`` takes the person's row lock once the
    password is checked and hashed (:mod:`.first_password`). With password sign-in off none is set."""
    check_password_allowed(ctx.settings)
    try:
        ended = first_password.set_first_password(
            ctx, db, actor.user, code, password, actor.session_id, lambda: lock().user
        )
    except WrongCode:
        actor.record(db, Event.PASSWORD_SET, "failure", reason="wrong_code")
        raise
    actor.record(db, Event.PASSWORD_SET, "success", sessions_ended=ended)
    return ended


def export_data(db: Session, actor: Actor) -> dict[str, Any]:
    """Everything held about the person (:mod:`.personal_data`); the export is audited."""
    data = personal_data.personal_data(db, actor.user, now())
    actor.record(db, Event.PERSONAL_DATA_EXPORTED, "success")
    return data


def delete_account(ctx: Context, db: Session, actor: Actor, current_password: str, lock: Callable[[], Actor]) -> None:
    """The account and what hangs on it go (:mod:`.deletion`), once the person showed again it is
    them: their password, or for an account without one a sign-in a few minutes ago."""
    user = _prove(ctx, db, actor, lock, current_password, RecentSignIn.WITHOUT_PASSWORD, Event.ACCOUNT_DELETED)
    deletion.delete_account(ctx, db, user, by="self", client_id=actor.client_id)


def start_second_factor(
    ctx: Context, db: Session, actor: Actor, method: str, current_password: str, lock: Callable[[], Actor]
) -> Enrolment:
    """Begin turning a second factor on: an authenticator's secret to scan, or a code sent to the
    verified address or number. Nothing changes on the account until :func:`confirm_second_factor`."""
    user = _prove_for_second_factor(ctx, db, actor, lock, current_password)
    return second_factor.start(ctx, db, user, method)


def resend_enrolment_code(ctx: Context, db: Session, actor: Actor, enrolment_token: str) -> Enrolment:
    enrolment = second_factor.open_enrolment(ctx, actor.user, enrolment_token)
    if enrolment.destination is None:
        raise second_factor.SecondFactorError("enrolment_expired")
    second_factor.send_code(ctx, db, actor.user, enrolment)
    return enrolment


def confirm_second_factor(ctx: Context, db: Session, actor: Actor, enrolment_token: str, code: str) -> list[str]:
    """The factor is on once ``code`` shows it works; returns the new recovery codes, shown once."""
    enrolment = second_factor.open_enrolment(ctx, actor.user, enrolment_token)
    codes = second_factor.confirm(ctx, db, actor.user, enrolment, code)
    if codes is None:
        actor.record(db, Event.CODE_VERIFIED, "failure", channel=enrolment.method, purpose=Purpose.ENABLE_MFA)
        raise WrongCode
    actor.record(db, Event.SECOND_FACTOR_ENABLED, "success", method=enrolment.method)
    return codes


def turn_off_second_factor(
    ctx: Context, db: Session, actor: Actor, current_password: str, lock: Callable[[], Actor]
) -> None:
    user = _prove_for_second_factor(ctx, db, actor, lock, current_password)
    method = second_factor.turn_off(ctx, db, user)
    actor.record(db, Event.SECOND_FACTOR_DISABLED, "success", method=method)


def new_recovery_codes(
    ctx: Context, db: Session, actor: Actor, current_password: str, lock: Callable[[], Actor]
) -> list[str]:
    """Every earlier recovery code dies."""
    user = _prove_for_second_factor(ctx, db, actor, lock, current_password)
    codes = second_factor.new_recovery_codes(ctx, db, user)
    actor.record(db, Event.RECOVERY_CODES_REGENERATED, "success")
    return codes


def _prove_for_second_factor(
    ctx: Context, db: Session, actor: Actor, lock: Callable[[], Actor], current_password: str
) -> User:
    """A sign-in a few minutes ago will do; otherwise the current password."""
    event, purpose = Event.REAUTHENTICATION, Purpose.SECOND_FACTOR
    return _prove(ctx, db, actor, lock, current_password, RecentSignIn.ALWAYS, event, purpose=purpose)


def _prove(
    ctx: Context,
    db: Session,
    actor: Actor,
    lock: Callable[[], Actor],
    current_password: str,
    recent_sign_in: RecentSignIn,
    event: Event,
    **detail: str,
) -> User:
    """The person, locked, once they showed again it is them; the password is checked before the
    lock is taken (``lock``), and confirmed under it. A :class:`NotReauthenticated` is recorded as
    ``event``."""
    try:
        proof = prove(
            db,
            ctx.settings,
            ctx.secret_key,
            actor.user,
            current_password,
            recent_sign_in=recent_sign_in,
            auth_time=actor.auth_time,
        )
    except NotReauthenticated as exc:
        actor.record(db, event, "failure", reason=exc.reason, **detail)
        raise
    user = lock().user
    confirm(user, proof)
    return user
