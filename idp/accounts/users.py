"""People: creating, finding, disabling and unlocking them."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..security.digests import new_id
from ..sessions import sign_out_everywhere
from ..storage import User, now
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


def create_user(
    db: Session,
    *,
    email: str | None = None,
    password: str | None = None,
    phone: str | None = None,
    name: str | None = None,
    verified: bool = False,
    phone_region: str | None = None,
) -> User:
    """An account needs an email or a phone number; a passwordless one may have only a phone."""
    if email is None and not phone:
        raise UserError("an account needs an email address or a phone number")
    email = normalize_email(email) if email is not None else None
    try:
        e164 = to_e164(phone, phone_region) if phone else None
    except PhoneError as exc:
        raise UserError(str(exc)) from None
    if name is not None and len(name.strip()) > 200:
        raise UserError("the name must have at most 200 characters")
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
        name=(name or "").strip() or None,
        password_hash=hash_password(password) if password is not None else None,
        disabled=False,
        failed_sign_ins=0,
        created_at=stamp,
        updated_at=stamp,
    )
    db.add(user)
    db.flush()
    return user


def find_by_identifier(db: Session, identifier: str, phone_region: str | None) -> User | None:
    """An email address, or a phone number in any form ``phonenumbers`` understands."""
    identifier = identifier.strip()
    if "@" in identifier:
        try:
            return db.scalar(select(User).where(User.email == normalize_email(identifier)))
        except UserError:
            return None
    try:
        return db.scalar(select(User).where(User.phone == to_e164(identifier, phone_region)))
    except PhoneError:
        return None


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
    """A disabled person loses every session and every grant at once."""
    user = get_user(db, user_id)
    user.disabled = True
    user.updated_at = now()
    sign_out_everywhere(db, user.id)
    return user
