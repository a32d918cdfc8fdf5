"""What a new password must be: long enough, not common, not the email, not known breached,
and not one of the person's last five.

The common list is zxcvbn's 30,000 most frequent passwords. The breach check uses the Pwned
Passwords range API by k-anonymity: only the first five hex digits of the SHA-1 leave the machine,
and an unreachable service lets the password through with a log line (fail open), because an
outage elsewhere must not stop people from registering.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..settings import Settings
from ..storage import PasswordHistory, User, now
from .errors import AccountChanged, AccountError, Code
from .passwords import hash_password, verify_password

MAX_LENGTH = 256
HISTORY = 5
log = logging.getLogger("idp.passwords")


class PasswordRejected(AccountError, ValueError):
    """The policy refuses the password: ``too_short`` (``min_length``), ``too_long``
    (``max_length``), ``too_common``, ``is_email``, ``used_before`` (``history``) or ``breached``."""

    code = Code.PASSWORD_REJECTED


@cache
def _common() -> frozenset[str]:
    """Loaded on first use: zxcvbn's lists hold some 13 MB, which an idle worker need not carry."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def breached(password: str, api_base: str) -> bool:
    """Pwned Passwords range API: ``GET /range/<first 5 hex of SHA-1>``; suffixes come back."""
    import httpx  # here: only a deployment with IDP_PWNED_PASSWORDS on needs it (some 3 MB a process)

    digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
    prefix, suffix = digest[:5], digest[5:]
    try:
        response = httpx.get(
            f"{api_base}/range/{prefix}", headers={"Add-Padding": "true"}, timeout=httpx.Timeout(5.0, connect=3.0)
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("pwned passwords check skipped: %s", type(exc).__name__)
        return False
    for line in response.text.splitlines():
        candidate, _, count = line.strip().partition(":")
        if candidate == suffix and count.strip() not in ("", "0"):
            return True
    return False


def check_new_password(
    password: str,
    *,
    email: str | None,
    min_length: int,
    previous_hashes: Iterable[str] = (),
    pwned_api: str | None = None,
) -> None:
    """Raise :class:`PasswordRejected` with the rule the password breaks."""
    if len(password) < min_length:
        raise PasswordRejected("too_short", min_length=min_length)
    if len(password) > MAX_LENGTH:
        raise PasswordRejected("too_long", max_length=MAX_LENGTH)
    if password.lower() in _common():
        raise PasswordRejected("too_common")
    if email and password.strip().lower() == email.strip().lower():
        raise PasswordRejected("is_email")
    for stored in previous_hashes:
        if verify_password(stored, password):
            raise PasswordRejected("used_before", history=HISTORY)
    if pwned_api and breached(password, pwned_api):
        raise PasswordRejected("breached")


@dataclass(frozen=True)
class NewPassword:
    """A password the policy took, hashed, and what it was checked against: the person's password
    and history as they were read, which must still be theirs when it is applied."""

    password_hash: str
    current: str | None
    history: tuple[str, ...]


def _history(db: Session, user_id: str) -> tuple[str, ...]:
    return tuple(
        db.scalars(
            select(PasswordHistory.password_hash)
            .where(PasswordHistory.user_id == user_id)
            .order_by(PasswordHistory.created_at.desc(), PasswordHistory.id.desc())
            .limit(HISTORY)
        )
    )


def prepare_password(
    db: Session, settings: Settings, user: User, password: str, *, taken_back: bool = False
) -> NewPassword:
    """Check ``password`` against the policy and the person's history, and hash it: the slow part
    of setting a password (argon2 for each old hash and the new one, the breach check over HTTP),
    done before the person's row is locked. Writes nothing. Raises :class:`PasswordRejected`.

    ``taken_back``: for the account as :func:`~.reclaim.take_back` leaves it, with no password and
    no history: those were chosen by whoever registered it, not by the owner.
    """
    current = None if taken_back else user.password_hash
    history = () if taken_back else _history(db, user.id)
    previous = list(history)
    if current and current not in previous:
        previous = [current, *previous][:HISTORY]
    check_new_password(
        password,
        email=user.email,
        min_length=settings.password_min_length,
        previous_hashes=previous,
        pwned_api=settings.pwned_passwords_api if settings.pwned_passwords else None,
    )
    return NewPassword(hash_password(password), current, history)


def apply_password(db: Session, user: User, new: NewPassword) -> None:
    """Make the prepared password the person's, under their row lock (:func:`~.users.lock_user`).

    Every way a password is set (registration, reset, change, a first password) comes through
    here, so the last ``HISTORY`` hashes are always kept and always checked. Raises
    :class:`~.errors.AccountChanged` when the password or history it was checked against is no
    longer the person's: only comparisons here, no hashing.
    """
    if user.password_hash != new.current or _history(db, user.id) != new.history:
        raise AccountChanged
    stamp = now()
    if user.password_hash and user.password_hash not in new.history:
        # A password set outside this module (``idp users create --password``) joins the history now.
        db.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash, created_at=user.updated_at))
    user.password_hash = new.password_hash
    user.updated_at = stamp
    db.add(PasswordHistory(user_id=user.id, password_hash=new.password_hash, created_at=stamp))
    db.flush()
    stale = list(
        db.scalars(
            select(PasswordHistory.id)
            .where(PasswordHistory.user_id == user.id)
            .order_by(PasswordHistory.created_at.desc(), PasswordHistory.id.desc())
            .offset(HISTORY)
        )
    )
    if stale:
        db.execute(delete(PasswordHistory).where(PasswordHistory.id.in_(stale)))


def set_password(db: Session, settings: Settings, user: User, password: str) -> None:
    """Prepare and apply at once, for an account nobody else can be changing: one made in this
    transaction."""
    apply_password(db, user, prepare_password(db, settings, user, password))
