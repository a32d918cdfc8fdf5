"""What a signed-in person changes about their own account: profile, phone number, sessions.

The hosted ``/account`` page and the account API both call these; each function works inside the
caller's transaction and leaves the commit, and the audit event, to the caller.

Adding or changing a phone number first asks the person to show it is them (the current password,
or for an account without one a recent sign-in: :mod:`.reauthentication`), since a number signs in
by SMS code: a session alone must not be enough to plant one. The owner's mailbox is told once the
number is verified, and the time is noted, so that a later reset or "sign out everywhere" can take
off a number nobody has vouched for since (:mod:`.confirmation`).

A phone number becomes the person's only once they have entered the code sent to it. Until then
the number waits in the one-time code itself (purpose ``verify_phone``, identifier the number,
``user_id`` the person), so nothing half-verified is ever stored on the account. A number another
account has verified is refused with the same words as any other refusal; one another account
merely typed in and never verified gives way to the person who proves they hold it.

Taking a number off the account tells the owner's mailbox, as a new password or address does: the
number may have been how they got their codes, and whoever removed it had their session. Changes
to the number lock the person's row (:func:`~.users.lock_user`) before they write, so two at once
run one after the other; adding one checks the password first, without the lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..audit import mask
from ..context import Context
from ..messaging.outbox import enqueue, notice_useful_until
from ..sso import end_session
from ..storage import BrowserSession, OneTimeCode, User, now
from . import otp
from .codes_vocabulary import Channel, Purpose, SecondFactorMethod
from .confirmation import drop_unconfirmed_phone
from .devices import describe
from .errors import AccountError, Code, WrongCode
from .language_tags import clean_language_tag
from .phones import to_e164
from .picture import clean_picture
from .postal_address import clean_address
from .reauthentication import RecentSignIn, confirm, prove
from .time_zones import clean_zoneinfo
from .usernames import UsernameTaken, clean_username, ensure_free
from .users import clean_name, lock_user

VERIFY_PHONE = Purpose.VERIFY_PHONE


class PhoneNeeded(AccountError):
    """The number cannot be removed (``second_factor``, ``only_sign_in``) or replaced
    (``second_factor_swap``): SMS is the second factor, or it is the only way to sign in. Replacing
    the number of the second factor would move the factor with no more proof than the session,
    where turning it off takes the password or a fresh sign-in."""

    code = Code.PHONE_NEEDED


class PhoneAlreadyYours(AccountError):
    """The number is already this person's verified one."""

    code = Code.INVALID_PHONE

    fixed_reason = "already_yours"


class NoPhone(AccountError):
    """There is no number to remove."""

    code = Code.NO_PHONE


class PhoneUnavailable(AccountError):
    """Another account has verified this number; the code is spent."""

    code = Code.PHONE_UNAVAILABLE
    keeps_changes = True


@dataclass(frozen=True)
class OthersEnded:
    sessions: list[str]
    """The ids of the sessions ended."""
    phone_removed: str | None
    """The number taken off because it came after the person last showed who they are."""


@dataclass(frozen=True)
class SessionSummary:
    id: str
    device: str
    ip: str | None
    started_at: int
    last_seen_at: int
    current: bool


def profile_of(user: User) -> dict[str, Any]:
    """The person's profile as the account API shows it and their data export begins."""
    return {
        "sub": user.id,
        "email": user.email,
        "email_verified": bool(user.email_verified),
        "phone": user.phone,
        "phone_verified": bool(user.phone_verified),
        "name": user.name,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "preferred_username": user.preferred_username,
        "locale": user.locale,
        "zoneinfo": user.zoneinfo,
        "picture": user.picture,
        "address": user.address,
        "mfa_method": user.mfa_method,
    }


_CHECKS: dict[str, Callable[[str], str | None]] = {
    "name": clean_name,
    "given_name": clean_name,
    "family_name": clean_name,
    "preferred_username": clean_username,
    "locale": clean_language_tag,
    "zoneinfo": clean_zoneinfo,
    "picture": clean_picture,
}
EDITABLE = tuple(_CHECKS)
"""What a person changes about themselves here besides the address; an empty value removes it,
but for ``locale``."""


def update_profile(
    db: Session, user: User, changes: Mapping[str, str], address: Mapping[str, object] | None = None
) -> list[str]:
    """Set what ``changes`` names of :data:`EDITABLE`, and the whole ``address`` when one is given
    (one with no part filled in removes it), each value checked as it is wherever else it is set
    (:func:`~.users.clean_name`, :mod:`.usernames`, :mod:`.time_zones`, :mod:`.picture`,
    :mod:`.postal_address`), and all of them before any is written; returns the fields whose value
    changed, in :data:`EDITABLE`'s order, then ``address``.

    Raises :class:`~.users.NameRefused`, :class:`~.usernames.UsernameRefused`,
    :class:`~.usernames.UsernameTaken` (also when another person took it at the same moment),
    :class:`~.language_tags.LanguageTagRefused`, :class:`~.time_zones.UnknownTimeZone`,
    :class:`~.picture.PictureRefused` or :class:`~.postal_address.AddressRefused`.
    """
    checked: dict[str, object] = {field: _CHECKS[field](changes[field]) for field in EDITABLE if field in changes}
    if address is not None:
        checked["address"] = clean_address(address)
    changed = [field for field, value in checked.items() if getattr(user, field) != value]
    if not changed:
        return changed
    if "preferred_username" in changed:
        username = checked["preferred_username"]
        ensure_free(db, user.id, username if isinstance(username, str) else None)
    try:
        with db.begin_nested():
            for field in changed:
                setattr(user, field, checked[field])
            db.flush()
    except IntegrityError:
        raise UsernameTaken from None
    user.updated_at = now()
    return changed


def start_phone_verification(
    ctx: Context,
    db: Session,
    user: User,
    raw_phone: str,
    current_password: str,
    auth_time: int | None,
    lock: Callable[[], User],
) -> str:
    """Send a code to the number and return it as E.164, once the person showed it is them
    (``auth_time``: when the session signed in). The password is checked before ``lock`` takes the
    person's row lock and gives the person as they are now (or raises, when the caller may no
    longer act).

    Raises :class:`~idp.accounts.phones.PhoneError` for a number that is not one (no password is
    checked then), a :class:`~.reauthentication.NotReauthenticated` (commit to keep a wrong
    password counted), :class:`PhoneAlreadyYours`, :class:`PhoneNeeded` when SMS is the second
    factor, :class:`otp.ResendTooSoon` when too many codes went to it lately, and
    :class:`~.errors.AccountChanged` when the password changed while it was checked.
    """
    phone = to_e164(raw_phone, ctx.settings.phone_default_region)
    proof = prove(
        db,
        ctx.settings,
        ctx.secret_key,
        user,
        current_password,
        recent_sign_in=RecentSignIn.WITHOUT_PASSWORD,
        auth_time=auth_time,
    )
    user = lock()
    confirm(user, proof)
    if phone == user.phone and user.phone_verified:
        raise PhoneAlreadyYours
    _check_replaceable(user, phone)
    send_phone_code(ctx, db, user, phone)
    return phone


def send_phone_code(ctx: Context, db: Session, user: User, phone: str) -> None:
    """A new code by SMS; the one sent before dies, and so does every code this person asked for
    another number: one number is verified at a time, the one asked for last, even when two asks
    fall in the same second (which ``created_at`` cannot order). Raises :class:`otp.ResendTooSoon`."""
    otp.send(
        ctx, db, purpose=VERIFY_PHONE, channel=Channel.SMS, identifier=phone, user_id=user.id, template="verify_phone"
    )
    stamp = now()
    db.execute(
        update(OneTimeCode)
        .where(
            OneTimeCode.user_id == user.id,
            OneTimeCode.purpose == VERIFY_PHONE,
            OneTimeCode.identifier != phone,
            OneTimeCode.expires_at > stamp,
        )
        .values(expires_at=stamp, consumed_at=func.coalesce(OneTimeCode.consumed_at, stamp))
    )


def pending_phone(db: Session, user: User) -> str | None:
    """The number this person last asked to verify, while its code lives (even when spent by wrong
    tries, so that they can ask for a new one); ``None`` once it is verified."""
    phone = db.scalar(
        select(OneTimeCode.identifier)
        .where(OneTimeCode.user_id == user.id, OneTimeCode.purpose == VERIFY_PHONE, OneTimeCode.expires_at > now())
        .order_by(OneTimeCode.created_at.desc())
        .limit(1)
    )
    if phone is None or (phone == user.phone and user.phone_verified):
        return None
    return phone


def confirm_phone(ctx: Context, db: Session, user: User, phone: str, code: str) -> None:
    """Store ``phone`` as the person's verified number if ``code`` is the one sent to it for them,
    and tell the owner's mailbox.

    Raises :class:`WrongCode` (the try is counted), :class:`PhoneUnavailable` or
    :class:`PhoneNeeded` (SMS became the second factor since the code was sent).
    """
    lock_user(db, user.id)
    _check_replaceable(user, phone)
    spent = otp.verify(ctx, db, purpose=VERIFY_PHONE, identifier=phone, code=code)
    if spent is None or spent.user_id != user.id:
        raise WrongCode
    holder = db.scalar(select(User).where(User.phone == phone, User.id != user.id))
    stamp = now()
    if holder is not None:
        if holder.phone_verified:
            raise PhoneUnavailable
        holder.phone = None
        holder.updated_at = stamp
        db.flush()
    user.phone = phone
    user.phone_verified = True
    user.phone_verified_at = stamp
    user.updated_at = stamp
    db.flush()
    if user.email is not None:
        _notify(ctx, db, user.email, "phone_added", phone)


def _check_replaceable(user: User, phone: str) -> None:
    if user.mfa_method == SecondFactorMethod.SMS and phone != user.phone:
        raise PhoneNeeded("second_factor_swap")


def remove_phone(ctx: Context, db: Session, user: User) -> str:
    """Take the number off the account, tell the owner's mailbox, and return the number: codes no
    longer go to it, and it no longer signs the person in. Refused while SMS is the second factor,
    and on an account with no email address, for which the number is the only way to sign in."""
    lock_user(db, user.id)
    if user.phone is None:
        raise NoPhone
    if user.mfa_method == SecondFactorMethod.SMS:
        raise PhoneNeeded("second_factor")
    if user.email is None:
        raise PhoneNeeded("only_sign_in")
    phone = user.phone
    email = user.email
    user.phone = None
    user.phone_verified = False
    user.phone_verified_at = None
    user.updated_at = now()
    db.flush()
    _notify(ctx, db, email, "phone_removed", phone)
    return phone


def _notify(ctx: Context, db: Session, email: str, template: str, phone: str) -> None:
    """The number masked as the audit log has it, and the way back should it not have been them."""
    enqueue(
        db,
        ctx.secret_key,
        Channel.EMAIL,
        email,
        template,
        {
            "phone": mask(phone),
            "when": datetime.fromtimestamp(now(), UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "reset_link": f"{ctx.settings.issuer}/password/forgot",
        },
        useful_until=notice_useful_until(),
    )


def _live_sessions(user: User) -> Select[BrowserSession]:
    return select(BrowserSession).where(
        BrowserSession.user_id == user.id, BrowserSession.ended_at.is_(None), BrowserSession.expires_at > now()
    )


def list_sessions(db: Session, user: User, current_session_id: str | None) -> list[SessionSummary]:
    """The person's live sessions, this one first, then the most recently seen."""
    sessions = db.scalars(_live_sessions(user).order_by(BrowserSession.last_seen_at.desc(), BrowserSession.id))
    summaries = [
        SessionSummary(
            id=session.id,
            device=describe(session.user_agent),
            ip=session.ip,
            started_at=session.created_at,
            last_seen_at=session.last_seen_at,
            current=session.id == current_session_id,
        )
        for session in sessions
    ]
    return sorted(summaries, key=lambda summary: not summary.current)


def end_one(db: Session, user: User, session_id: str) -> bool:
    """End one of the person's own live sessions; ``False`` (and nothing done) for any other id."""
    session = db.scalar(_live_sessions(user).where(BrowserSession.id == session_id))
    if session is None:
        return False
    end_session(db, session.id)
    return True


def end_others(ctx: Context, db: Session, user: User, keep_session_id: str) -> OthersEnded:
    """End every live session of the person but ``keep_session_id``, and take off a phone number
    added since the person last showed who they are (telling the owner's mailbox): signing out an
    intruder must also stop them signing back in by SMS code. The caller holds the person's lock."""
    others = _live_sessions(user).where(BrowserSession.id != keep_session_id)
    ended = list(db.scalars(others.with_only_columns(BrowserSession.id)))
    for session_id in ended:
        end_session(db, session_id)
    phone = drop_unconfirmed_phone(user)
    if phone is not None:
        db.flush()
        assert user.email is not None
        _notify(ctx, db, user.email, "phone_removed", phone)
    return OthersEnded(ended, phone)
