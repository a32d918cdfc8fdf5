"""Sign-ins that wait for a code: the second factor after a password, and passwordless sign-in.

Either way the browser holds a cookie naming a :class:`PendingSignIn` row, and the code comes by
email, by SMS or from an authenticator app. Asking for a passwordless code answers the same
whether or not the account exists; an unknown identifier is sent a code only when
self-registration is on, and then the first sign-in creates the account, its email or phone
already verified by the code itself.

Whatever spends or sends a code of a known person's takes the person's row lock first
(:func:`~.users.lock_user`), as every action that changes the account does: an email change
holding the person while it cancels the codes sent to the old address, or a reset ending every
session, then runs wholly before or wholly after the sign-in. Without it a sign-in holding its
code row while it waits to store its session referring to the person would deadlock with them.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event
from ..context import Context
from ..metrics import SIGN_INS
from ..security.digests import token_digest
from ..storage import PendingSignIn, User, add_secret, now
from . import otp, sms_budget, totp
from .authentication import count_failure, is_locked, lock_minutes, reset_failures
from .codes_vocabulary import Channel, Purpose
from .errors import AccountError, Code, WrongCode
from .phones import to_e164
from .reclaim import take_back
from .users import UserError, create_user, lock_user, normalize_email

LIFETIME = 10 * 60
SECOND_FACTOR = Purpose.SECOND_FACTOR
SIGN_IN = Purpose.SIGN_IN


class SignInEnded(AccountError):
    """The pending sign-in is over and its row gone; what was counted or spent is kept. The
    ``reason`` says why, for the person and the audit log."""

    code = Code.SIGN_IN_ENDED
    keeps_changes = True


class TooManyWrongCodes(SignInEnded):
    """The sign-in ended after its last wrong code (``IDP_OTP_ATTEMPTS``)."""

    fixed_reason = "too_many_wrong_codes"


class AccountLocked(SignInEnded):
    """The code was right, but wrong codes or passwords locked the account. Only whoever holds the
    code learns it, and that is the owner of the address or number: the message is for them."""

    def __init__(self, locked_until: int) -> None:
        super().__init__("account_locked", minutes=lock_minutes(locked_until))


class IdentifierError(AccountError):
    """Has an ``@`` but is not an email address; a number that is not one is a
    :class:`~.phones.PhoneError`."""

    code = Code.INVALID_EMAIL

    fixed_reason = "not_an_address"


@dataclass(frozen=True)
class Identifier:
    value: str
    channel: str


def parse_identifier(raw: str, region: str | None) -> Identifier:
    raw = raw.strip()
    if "@" in raw:
        try:
            return Identifier(normalize_email(raw), Channel.EMAIL)
        except UserError:
            raise IdentifierError from None
    return Identifier(to_e164(raw, region), Channel.SMS)


def start(
    db: Session,
    *,
    user_id: str | None,
    identifier: str | None,
    channel: str,
    amr: list[str],
    authorization_request_id: str | None,
) -> tuple[PendingSignIn, str]:
    """A new pending sign-in and the cookie value that names it (never stored)."""
    pending, cookie = add_secret(
        db,
        PendingSignIn,
        LIFETIME,
        user_id=user_id,
        identifier=identifier,
        channel=channel,
        amr=amr,
        authorization_request_id=authorization_request_id,
    )
    db.flush()
    return pending, cookie


def find(db: Session, cookie: str | None) -> PendingSignIn | None:
    if not cookie or len(cookie) > 100:
        return None
    pending = db.get(PendingSignIn, token_digest(cookie))
    if pending is None or pending.expires_at <= now():
        return None
    return pending


def finish(db: Session, pending: PendingSignIn) -> None:
    db.execute(delete(PendingSignIn).where(PendingSignIn.token_hash == pending.token_hash))


def is_second_factor(pending: PendingSignIn) -> bool:
    return bool(pending.amr)


@dataclass(frozen=True)
class Progress:
    """What the person entering a code is told: how many wrong codes the sign-in can still take,
    and in how many seconds a new code may be asked for (``None``: codes come from an app)."""

    tries_left: int
    resend_in: int | None


def progress(ctx: Context, db: Session, pending: PendingSignIn) -> Progress:
    """The same for every identifier, known or not: codes are counted alike for all."""
    tries_left = max(0, ctx.settings.otp_attempts - pending.attempts)
    if pending.channel == Channel.TOTP or pending.identifier is None:
        return Progress(tries_left, None)
    purpose = SECOND_FACTOR if is_second_factor(pending) else SIGN_IN
    return Progress(tries_left, otp.resend_wait(db, pending.identifier, purpose))


def send_code(ctx: Context, db: Session, pending: PendingSignIn) -> None:
    """Send a code for this pending sign-in, if its channel sends codes and there is someone to send
    it to. Raises :class:`otp.ResendTooSoon` when too many went out lately, and
    :class:`~.sms_budget.SmsRefused` when no text message may go to the number."""
    if pending.channel == Channel.TOTP or pending.identifier is None:
        return
    if pending.user_id is not None:
        lock_user(db, pending.user_id)
    purpose = SECOND_FACTOR if is_second_factor(pending) else SIGN_IN
    issued = otp.issue(ctx, db, purpose=purpose, identifier=pending.identifier, user_id=pending.user_id)
    if pending.channel == Channel.SMS:
        sms_budget.spend(ctx, pending.identifier)
    if not _may_receive(ctx, db, pending):
        return  # issued and counted all the same, so that the limits answer alike for every identifier
    otp.deliver(ctx, db, issued, channel=pending.channel, to=pending.identifier, template="one_time_code")


def _may_receive(ctx: Context, db: Session, pending: PendingSignIn) -> bool:
    """A code goes to an account that may sign in, or to a newcomer when self-registration is on."""
    if pending.user_id is None:
        return ctx.settings.self_registration
    user = db.get(User, pending.user_id)
    return user is not None and not user.disabled and _still_theirs(user, pending)


def _still_theirs(user: User, pending: PendingSignIn) -> bool:
    """The address or number the sign-in began with is still the person's: one they changed since
    must no longer receive codes that sign them in."""
    return pending.identifier == _address(user, pending.channel)


def _address(user: User, channel: str | None) -> str | None:
    """Where codes of ``channel`` go; none for an authenticator app, which is sent nothing."""
    if channel == Channel.EMAIL:
        return user.email
    if channel == Channel.SMS:
        return user.phone
    return None


def start_second_factor(
    ctx: Context, db: Session, user: User, authorization_request_id: str | None, first_factor: list[str]
) -> tuple[PendingSignIn, str]:
    """After a right first factor (``first_factor``, as ``amr`` names it): wait for the person's
    second factor, sending a code if it is sent, and record that it was asked for. The pending
    sign-in keeps the first factor, so that the session's ``amr`` names what was really presented."""
    user = lock_user(db, user.id) or user
    identifier = _address(user, user.mfa_method)
    pending, cookie = start(
        db,
        user_id=user.id,
        identifier=identifier,
        channel=user.mfa_method or Channel.TOTP,
        amr=first_factor,
        authorization_request_id=authorization_request_id,
    )
    detail = {"method": user.mfa_method}
    audit.record(db, Event.SECOND_FACTOR_REQUESTED, outcome="success", user_id=user.id, detail=detail)
    # A code that may not go now is left unsent: the code page tells why when the person asks again.
    with suppress(otp.ResendTooSoon, sms_budget.SmsRefused), db.begin_nested():
        send_code(ctx, db, pending)
    return pending, cookie


def start_passwordless(
    ctx: Context, db: Session, identifier: Identifier, authorization_request_id: str | None
) -> tuple[PendingSignIn, str]:
    """Raises :class:`otp.ResendTooSoon` and :class:`~.sms_budget.SmsRefused`; answers alike for
    known and unknown identifiers."""
    column = User.email if identifier.channel == Channel.EMAIL else User.phone
    found = db.scalar(select(User.id).where(column == identifier.value))
    user = lock_user(db, found) if found is not None else None
    if user is not None and getattr(user, column.key) != identifier.value:
        user = None  # the address or number moved to someone else while we waited for the lock
    pending, cookie = start(
        db,
        user_id=user.id if user else None,
        identifier=identifier.value,
        channel=identifier.channel,
        amr=[],
        authorization_request_id=authorization_request_id,
    )
    send_code(ctx, db, pending)
    return pending, cookie


def verify(ctx: Context, db: Session, pending: PendingSignIn, code: str) -> tuple[User, list[str]]:
    """The person and the ``amr`` of the finished sign-in; every outcome is recorded.

    Raises :class:`~.errors.WrongCode` when the code is wrong, :class:`TooManyWrongCodes` when this
    wrong code was the last one allowed, and :class:`AccountLocked` when a right passwordless code
    names a locked account; the last two end the pending sign-in (:class:`SignInEnded`). Each
    keeps what was counted or spent.
    """
    if pending.user_id is not None:
        lock_user(db, pending.user_id)
    second_factor = is_second_factor(pending)
    purpose = SECOND_FACTOR if second_factor else SIGN_IN
    try:
        result = (
            _verify_second_factor(ctx, db, pending, code)
            if second_factor
            else _verify_passwordless(ctx, db, pending, code)
        )
        if result is None:
            _count_wrong_code(ctx, db, pending)
            raise WrongCode
    except SignInEnded as ended:
        _record(db, pending, "failure", reason=ended.reason)
        raise
    except WrongCode:
        _record(db, pending, "failure", purpose=purpose)
        SIGN_INS.labels(method="second_factor" if second_factor else "code", outcome="failure").inc()
        raise
    user, amr = result
    _record(db, pending, "success", purpose=purpose, user_id=user.id)
    return user, amr


def _record(db: Session, pending: PendingSignIn, outcome: str, user_id: str | None = None, **detail: str) -> None:
    user_id = user_id or pending.user_id
    audit.record(
        db, Event.CODE_VERIFIED, outcome=outcome, user_id=user_id, detail={"channel": pending.channel, **detail}
    )


def _count_wrong_code(ctx: Context, db: Session, pending: PendingSignIn) -> None:
    """The last wrong code (``IDP_OTP_ATTEMPTS``) ends the pending sign-in, and a wrong code for an
    account counts toward its lockout like a wrong password: neither an authenticator code, which no resend limit
    protects, nor a passwordless code, of which a fresh one can be had every few minutes, can be
    guessed by starting again and again."""
    tries = db.execute(
        update(PendingSignIn)
        .where(PendingSignIn.token_hash == pending.token_hash)
        .values(attempts=PendingSignIn.attempts + 1)
        .returning(PendingSignIn.attempts)
    ).scalar_one_or_none()
    if pending.user_id is not None:
        user = db.get(User, pending.user_id)
        if user is not None and count_failure(db, ctx.settings, ctx.secret_key, user):
            audit.record(db, Event.ACCOUNT_LOCKED, outcome="success", user_id=user.id, detail={"by": "wrong_codes"})
    if tries is not None and tries >= ctx.settings.otp_attempts:
        finish(db, pending)
        raise TooManyWrongCodes


def _verify_second_factor(
    ctx: Context, db: Session, pending: PendingSignIn, code: str
) -> tuple[User, list[str]] | None:
    user = db.get(User, pending.user_id) if pending.user_id else None
    if user is None or user.disabled or is_locked(user):
        return None
    if pending.identifier is not None and not _still_theirs(user, pending):
        return None
    if pending.channel == Channel.TOTP:
        ok = totp.verify(db, ctx.secret_key, user, code)
        method = "otp"
    else:
        assert pending.identifier is not None
        ok = otp.verify(ctx, db, purpose=SECOND_FACTOR, identifier=pending.identifier, code=code) is not None
        method = "sms" if pending.channel == Channel.SMS else "otp"
    if not ok and "-" in code and totp.use_recovery_code(db, ctx.secret_key, user, code):
        ok, method = True, "otp"
    if not ok:
        return None
    reset_failures(user)
    return user, [*pending.amr, method, "mfa"]


def _verify_passwordless(ctx: Context, db: Session, pending: PendingSignIn, code: str) -> tuple[User, list[str]] | None:
    assert pending.identifier is not None
    if otp.verify(ctx, db, purpose=SIGN_IN, identifier=pending.identifier, code=code) is None:
        return None
    method = "sms" if pending.channel == Channel.SMS else "otp"
    user = db.get(User, pending.user_id) if pending.user_id else None
    if user is not None and not _still_theirs(user, pending):
        return None
    if user is not None and pending.channel == Channel.SMS and not user.phone_verified:
        # Whoever made that account only claimed the number; the person who proved it is someone else.
        user.phone = None
        db.flush()
        user = None
    if user is None:
        if not ctx.settings.self_registration:
            return None
        user = _register_on_first_sign_in(db, pending)
        if user is None:
            return None
    if user.disabled:
        return None
    if is_locked(user):
        assert user.locked_until is not None
        finish(db, pending)
        raise AccountLocked(user.locked_until)
    if pending.channel == Channel.EMAIL and not user.email_verified:
        _reclaim(db, user)
    if pending.channel == Channel.SMS:
        user.phone_verified = True
    if not second_factor_due(user, pending):
        reset_failures(user)
    return user, [method]


def second_factor_due(user: User, pending: PendingSignIn) -> bool:
    """A one-time code by email or SMS proves that one channel: an account with two-step
    verification still owes its second factor, unless that factor is the very channel the code
    just proved (a second code to the same mailbox would prove nothing more)."""
    if is_second_factor(pending):
        return False
    return user.mfa_method is not None and user.mfa_method != pending.channel


def _reclaim(db: Session, user: User) -> None:
    """The first proof of this email address: whoever made the account before never proved it, so
    nothing they set stays (:mod:`.reclaim`), a phone they proved included. This is what stops an
    account being hijacked before its owner ever signs in."""
    take_back(db, user)
    user.email_verified = True


def _register_on_first_sign_in(db: Session, pending: PendingSignIn) -> User | None:
    """The account of a first passwordless sign-in; with a phone only, the email is left to add."""
    assert pending.identifier is not None
    try:
        with db.begin_nested():
            if pending.channel == Channel.EMAIL:
                return create_user(db, email=pending.identifier, verified=True)
            return create_user(db, phone=pending.identifier, verified=True)
    except (IntegrityError, UserError):
        return None
