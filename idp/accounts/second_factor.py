"""Turning a person's second factor on and off: an authenticator app, or a code by email or SMS.

Turning it on takes two steps, and nothing changes on the account until the second: the person
shows that the factor works (a code from the app just enrolled, or the code we just sent), and
only then does it become the one sign-in asks for. Between the steps the enrolment lives in the
page itself, as a token sealed under ``IDP_SECRET_KEY`` that names the person, the method, the
new authenticator secret and the time: no schema change, nothing half-enrolled on the account,
and a token is useless to anyone else or after ``ENROLMENT_LIFETIME``.

Changing the second factor asks for the current password, unless the session signed in a few
minutes ago (:mod:`.reauthentication`, ``RecentSignIn.ALWAYS``): a browser left signed in must not
be enough to turn the protection off. Each change locks the person's row first, so two at once (two
browsers, say) run one after the other and the second sees what the first did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.fernet import InvalidToken
from sqlalchemy.orm import Session

from ..context import Context
from ..messaging.outbox import enqueue, notice_useful_until
from ..security.sealing import Sealer
from ..storage import User, now
from . import otp, totp
from .codes_vocabulary import Channel, Purpose, SecondFactorMethod
from .errors import AccountError, Code
from .reauthentication import signed_in_recently
from .users import lock_user

METHODS = tuple(SecondFactorMethod)
ENABLE_MFA = Purpose.ENABLE_MFA
ENROLMENT_LIFETIME = 10 * 60
_ENROLMENT = b"idp second factor enrolment"


class SecondFactorError(AccountError):
    """The change cannot be made: no such method, the enrolment expired, the factor is already
    off (or not on), or the codes would go to an address or number not verified."""

    code = Code.SECOND_FACTOR


@dataclass(frozen=True)
class Enrolment:
    """A second factor being set up: ``token`` goes in the page, sealed."""

    method: str
    token: str
    secret: str | None = None
    qr: str | None = None
    destination: str | None = None

    @property
    def key(self) -> str | None:
        """The authenticator secret in groups of four, for typing it in by hand."""
        if self.secret is None:
            return None
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))


def needs_password(auth_time: int | None) -> bool:
    """Whether a change asks for the password: the session did not sign in recently."""
    return not signed_in_recently(auth_time)


def start(ctx: Context, db: Session, user: User, method: str) -> Enrolment:
    """A new enrolment; for email and SMS the first code goes out (raises :class:`otp.ResendTooSoon`)."""
    if method not in METHODS:
        raise SecondFactorError("no_method")
    if method == SecondFactorMethod.TOTP:
        return _enrolment(ctx, user, method, totp.new_secret(), now())
    enrolment = _enrolment(ctx, user, method, None, now())
    send_code(ctx, db, user, enrolment)
    return enrolment


def open_enrolment(ctx: Context, user: User, token: str) -> Enrolment:
    """The enrolment sealed in ``token``, if it is this person's and still fresh."""
    try:
        sealed = json.loads(Sealer(ctx.secret_key, _ENROLMENT).open(token[:2048]))
    except (InvalidToken, ValueError):
        raise SecondFactorError("enrolment_expired") from None
    fresh = isinstance(sealed.get("at"), int) and now() - sealed["at"] < ENROLMENT_LIFETIME
    if sealed.get("user") != user.id or sealed.get("method") not in METHODS or not fresh:
        raise SecondFactorError("enrolment_expired")
    return _enrolment(ctx, user, sealed["method"], sealed.get("secret"), sealed["at"])


def send_code(ctx: Context, db: Session, user: User, enrolment: Enrolment) -> None:
    """A code to the email or phone being enrolled; raises :class:`otp.ResendTooSoon`."""
    assert enrolment.destination is not None
    otp.send(ctx, db, purpose=ENABLE_MFA, channel=enrolment.method, identifier=enrolment.destination, user_id=user.id)


def confirm(ctx: Context, db: Session, user: User, enrolment: Enrolment, code: str) -> list[str] | None:
    """Turn the factor on when ``code`` proves it works: the new recovery codes, shown once.

    ``None`` when the code is wrong. An authenticator's confirming step is recorded as used, so
    the same code cannot also pass the next sign-in.
    """
    lock_user(db, user.id)
    if enrolment.method == SecondFactorMethod.TOTP:
        assert enrolment.secret is not None
        step = totp.matching_step(enrolment.secret, code)
        if step is None:
            return None
        user.totp_secret = totp.seal(ctx.secret_key, enrolment.secret)
        user.totp_last_step = step
    else:
        assert enrolment.destination is not None
        spent = otp.verify(ctx, db, purpose=ENABLE_MFA, identifier=enrolment.destination, code=code)
        if spent is None:
            return None
        user.totp_secret = None
        user.totp_last_step = None
    user.mfa_method = enrolment.method
    user.updated_at = now()
    return totp.new_recovery_codes(db, ctx.secret_key, user)


def turn_off(ctx: Context, db: Session, user: User) -> str:
    """Sign-in goes back to the password alone; every recovery code dies and the owner is told.
    Returns the method that was on."""
    lock_user(db, user.id)
    method = user.mfa_method
    if method is None:
        raise SecondFactorError("already_off")
    user.mfa_method = None
    user.totp_secret = None
    user.totp_last_step = None
    user.updated_at = now()
    totp.spend_recovery_codes(db, user)
    if user.email is not None:
        enqueue(
            db,
            ctx.secret_key,
            Channel.EMAIL,
            user.email,
            "second_factor_disabled",
            {"account_link": f"{ctx.settings.issuer}/account/security"},
            useful_until=notice_useful_until(),
            locale=user.locale,
        )
    return method


def new_recovery_codes(ctx: Context, db: Session, user: User) -> list[str]:
    lock_user(db, user.id)
    if user.mfa_method is None:
        raise SecondFactorError("not_on")
    return totp.new_recovery_codes(db, ctx.secret_key, user)


def _destination(user: User, method: str) -> str:
    """Where the codes of ``method`` go: only a verified address or number will do."""
    if method == SecondFactorMethod.EMAIL:
        destination, verified = user.email, user.email_verified
    else:
        destination, verified = user.phone, user.phone_verified
    if destination is None or not verified:
        raise SecondFactorError(f"{method}_unverified")
    return destination


def _enrolment(ctx: Context, user: User, method: str, secret: str | None, at: int) -> Enrolment:
    token = Sealer(ctx.secret_key, _ENROLMENT).seal(
        json.dumps({"user": user.id, "method": method, "secret": secret, "at": at})
    )
    if method == SecondFactorMethod.TOTP:
        assert secret is not None
        account = user.email or user.phone or user.id
        uri = totp.provisioning_uri(secret, account, totp.ISSUER_NAME)
        return Enrolment(method, token, secret=secret, qr=totp.qr_svg_data_uri(uri))
    return Enrolment(method, token, destination=_destination(user, method))
