"""Authenticator apps: TOTP (RFC 6238) through ``pyotp``, and one-time recovery codes.

The shared secret is sealed in the database (the provider must read it back to check codes), and
the last accepted time step is kept so that a code cannot be replayed inside its window.
"""

from __future__ import annotations

import secrets
import time

import pyotp
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..security.digests import keyed_digest
from ..security.sealing import AUTHENTICATOR, Sealer
from ..storage import RecoveryCode, User, now, spend_once
from .digits import ascii_digits

ISSUER_NAME = "idp"
RECOVERY_CODES = 10
STEP = 30


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg_data_uri(uri: str) -> str:
    """The QR code as an ``img`` source: no script, allowed by the page's CSP (``img-src data:``)."""
    import segno  # here: only setting up an authenticator app draws one (1 MB a process)

    return segno.make(uri, error="m").svg_data_uri(scale=5)


def seal(secret_key: str, secret: str) -> str:
    return Sealer(secret_key, AUTHENTICATOR).seal(secret)


def open_sealed(secret_key: str, sealed: str) -> str:
    return Sealer(secret_key, AUTHENTICATOR).open(sealed)


def matching_step(secret: str, code: str, at: float | None = None) -> int | None:
    """The time step ``code`` belongs to, allowing one step of clock drift either way."""
    code = ascii_digits(code.strip().replace(" ", ""))
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int((at if at is not None else time.time()) // STEP)
    for step in (current, current - 1, current + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def verify(db: Session, secret_key: str, user: User, code: str) -> bool:
    """Accept a code once: a conditional UPDATE on the last step refuses a replay, even a racing one."""
    if not user.totp_secret:
        return False
    step = matching_step(open_sealed(secret_key, user.totp_secret), code)
    if step is None:
        return False
    return spend_once(
        db,
        User,
        User.id == user.id,
        (User.totp_last_step.is_(None)) | (User.totp_last_step < step),
        totp_last_step=step,
    )


def _recovery_digest(secret_key: str, user_id: str, code: str) -> str:
    return keyed_digest(secret_key, f"recovery:{user_id}:{ascii_digits(code.strip().lower()).replace('-', '')}")


def spend_recovery_codes(db: Session, user: User) -> None:
    db.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        .values(used_at=now())
    )


def new_recovery_codes(db: Session, secret_key: str, user: User) -> list[str]:
    """Ten fresh codes, shown once; every earlier code stops working."""
    spend_recovery_codes(db, user)
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = secrets.token_hex(5)
        code = f"{raw[:5]}-{raw[5:]}"
        db.add(RecoveryCode(code_hash=_recovery_digest(secret_key, user.id, code), user_id=user.id, created_at=now()))
        codes.append(code)
    db.flush()
    return codes


def use_recovery_code(db: Session, secret_key: str, user: User, code: str) -> bool:
    if len(code) > 32:
        return False
    digest = _recovery_digest(secret_key, user.id, code)
    return spend_once(
        db,
        RecoveryCode,
        RecoveryCode.code_hash == digest,
        RecoveryCode.user_id == user.id,
        RecoveryCode.used_at.is_(None),
        used_at=now(),
    )


def remaining_recovery_codes(db: Session, user: User) -> int:
    unused = select(func.count()).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    return db.scalar(unused) or 0
