"""People: creating, finding, disabling and unlocking them."""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..languages import speaker
from ..security.digests import new_id
from ..sso import sign_out_everywhere
from ..storage import User, now
from ..storage.people_changes import CLAIMS_UNCHANGED
from .errors import AccountError, Code
from .passwords import hash_password
from .phones import PhoneError, to_e164

_EMAIL = re.compile(r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$")  # PostgreSQL text holds no NUL
MIN_PASSWORD = 8
MAX_PASSWORD = 256


class UserError(ValueError):
    """Input that cannot make or change an account; the message says which value and why."""


def normalize_email(value: str) -> str:
    value = value.strip().lower()
    if len(value) > 320 or not _EMAIL.match(value):
        raise UserError("that is not an email address")
    return value


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password must have at most {MAX_PASSWORD} characters")


MAX_NAME = 200
# Text-direction embeddings, overrides and isolates, and line and paragraph separators: a name is
# shown in pages, put in ID tokens and logged, where these would reorder or split what follows.
_LAYOUT_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


class NameRefused(AccountError, ValueError):
    """A display name that cannot be kept: ``too_long`` (``max_length``) or ``control_characters``."""

    code = Code.INVALID_NAME


def clean_name(raw: str | None) -> str | None:
    """The display name to keep (``None`` for an empty one), or :class:`NameRefused`."""
    name = (raw or "").strip()
    if len(name) > MAX_NAME:
        raise NameRefused("too_long", max_length=MAX_NAME)
    if any(unicodedata.category(c) == "Cc" or c in _LAYOUT_CONTROLS for c in name):
        raise NameRefused("control_characters")
    return name or None


def said(error: AccountError) -> str:
    """An operator's one line: the reason and its data (``too long, max length 200``)."""
    data = "".join(f", {key.replace('_', ' ')} {value}" for key, value in error.data.items())
    return error.reason.replace("_", " ") + data


def create_user(
    db: Session,
    *,
    email: str | None = None,
    password: str | None = None,
    phone: str | None = None,
    name: str | None = None,
    given_name: str | None = None,
    family_name: str | None = None,
    verified: bool = False,
    phone_region: str | None = None,
) -> User:
    """An account needs an email or a phone number; a passwordless one may have only a phone. One
    made while serving a request (registration, a first sign-in by code) keeps the language of
    that request as its own, so that later messages, sent from anywhere, are in it too."""
    if email is None and not phone:
        raise UserError("an account needs an email address or a phone number")
    email = normalize_email(email) if email is not None else None
    try:
        e164 = to_e164(phone, phone_region) if phone else None
    except PhoneError as exc:
        raise UserError(f"that phone number cannot be used: {said(exc)}") from None
    try:
        name, given_name, family_name = clean_name(name), clean_name(given_name), clean_name(family_name)
    except NameRefused as exc:
        raise UserError(f"that name cannot be used: {said(exc)}") from None
    if password is not None:
        check_password(password)
    if email and db.scalar(select(User.id).where(User.email == email)) is not None:
        raise UserError("an account with that email already exists")
    if e164 and db.scalar(select(User.id).where(User.phone == e164)) is not None:
        raise UserError("an account with that phone number already exists")
    stamp = now()
    user = User(
        id=new_id(),
        email=email,
        email_verified=verified and email is not None,
        phone=e164,
        phone_verified=verified and e164 is not None,
        name=name,
        given_name=given_name,
        family_name=family_name,
        password_hash=hash_password(password) if password is not None else None,
        disabled=False,
        failed_sign_ins=0,
        created_at=stamp,
        updated_at=stamp,
        locale=speaker(db).request_tag(),
    )
    db.add(user)
    db.flush()
    return user


def find_by_identifier(db: Session, identifier: str, phone_region: str | None) -> User | None:
    """An email address, a phone number in any form ``phonenumbers`` understands, or else a
    username (``preferred_username``, as a system people came from had it, exactly)."""
    identifier = identifier.strip()
    if "@" in identifier:
        try:
            return db.scalar(select(User).where(User.email == normalize_email(identifier)))
        except UserError:
            return None
    try:
        by_phone = db.scalar(select(User).where(User.phone == to_e164(identifier, phone_region)))
    except PhoneError:
        by_phone = None
    if by_phone is not None or not identifier:
        return by_phone
    return db.scalar(select(User).where(User.preferred_username == identifier))


def lock_user(db: Session, user_id: str) -> User | None:
    """The person's row, read afresh and locked until the transaction ends; ``None`` when gone.

    Every action that spends a link or changes what proves the person (a reset, a new password,
    address, phone or second factor) takes this lock before it writes anything else. Two such
    actions on one person then run one after the other, whatever other rows (links, sessions,
    codes) each goes on to lock, so they cannot deadlock; and the second sees what the first did.
    On PostgreSQL it is ``FOR NO KEY UPDATE``, the lock an ``UPDATE`` of the row takes anyway:
    it queues behind the others' and still lets rows that merely refer to the person (a session,
    an authorization code) be inserted meanwhile. ``FOR UPDATE`` would not: an app's sign-in in the
    person's other browser, having noted its session's last-seen time, would wait to store its code
    for a reset that waits to end that very session. SQLite has no row locks: a write that changes
    nothing takes its one database write lock instead.
    """
    if db.get_bind().dialect.name == "sqlite":
        db.execute(
            update(User)
            .where(User.id == user_id)
            .values(updated_at=User.updated_at)
            .execution_options(synchronize_session=False, **{CLAIMS_UNCHANGED: True})
        )
    return db.scalar(
        select(User).where(User.id == user_id).with_for_update(key_share=True).execution_options(populate_existing=True)
    )


def list_users(db: Session) -> list[User]:
    return list(db.scalars(select(User).order_by(User.created_at, User.id)))


def get_user(db: Session, user_id: str) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise UserError(f"no user with id {user_id}")
    return user


def unlock_user(db: Session, user_id: str) -> User:
    user = get_user(db, user_id)
    user.failed_sign_ins = 0
    user.locked_until = None
    return user


def disable_user(db: Session, user_id: str) -> User:
    """A disabled person loses every session and every grant at once.

    The person's lock comes first: a sign-in or a reset under way finishes before, and its sessions
    end with the rest, or it waits and then finds the account disabled.
    """
    user = lock_user(db, user_id)
    if user is None:
        raise UserError(f"no user with id {user_id}")
    user.disabled = True
    user.updated_at = now()
    sign_out_everywhere(db, user.id)
    return user
