"""What an operator does to a person's account from the command line: find them, change their
profile, enable them again, hand them a reset link, and see or end their sessions and grants.

Each change is checked as the same value is checked everywhere else (an address, a number, a
name), refuses a value that is another person's, and is written in the caller's transaction, so a
refusal leaves nothing behind. A :class:`~.users.UserError` says what was wrong in one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..settings import Settings
from ..sso import end_session
from ..storage import BrowserSession, Grant, User, UserGroup, now, revoke_grants
from . import links, recovery
from .errors import AccountError
from .language_tags import MAX_LANGUAGE_TAG, LanguageTagRefused, clean_language_tag
from .person_lines import MAX_GROUP
from .phones import PhoneError, to_e164
from .picture import PictureRefused, clean_picture
from .postal_address import AddressRefused, clean_address
from .time_zones import UnknownTimeZone, clean_zoneinfo
from .usernames import MAX_USERNAME, UsernameRefused, UsernameTaken, clean_username, ensure_free
from .users import UserError, clean_name, get_user, lock_user, normalize_email, said

SEARCHED = (User.email, User.phone, User.name, User.given_name, User.family_name, User.preferred_username)
MAX_FOUND = 50


def search_users(db: Session, text: str) -> list[User]:
    """People whose id is ``text``, or whose address, number, names or username hold it."""
    pattern = f"%{text.strip()}%"
    query = select(User).where(or_(User.id == text.strip(), *(column.ilike(pattern) for column in SEARCHED)))
    return list(db.scalars(query.order_by(User.created_at, User.id).limit(MAX_FOUND)))


def enable_user(db: Session, user_id: str) -> User:
    user = get_user(db, user_id)
    user.disabled = False
    user.updated_at = now()
    return user


def update_person(db: Session, settings: Settings, user_id: str, changes: Mapping[str, Any]) -> User:
    """``changes``: ``email``, ``phone``, ``name``, ``given_name``, ``family_name``,
    ``preferred_username``, ``locale``, ``zoneinfo``, ``picture``, ``address`` (a JSON object, as
    text), ``groups`` (the whole list), ``email_verified``, ``phone_verified``."""
    user = lock_user(db, user_id)
    if user is None:
        raise UserError(f"no user with id {user_id}")
    try:
        return _update(db, settings, user, changes)
    except IntegrityError:
        raise UserError(
            "--email, --phone, --username: another person took one of them meanwhile; nothing was changed"
        ) from None


def _update(db: Session, settings: Settings, user: User, changes: Mapping[str, Any]) -> User:
    """Each change checked as the person's own would be; a value another transaction takes
    between the check and the write is an :class:`IntegrityError` (its write waited for that one)."""
    if "email" in changes:
        try:
            email = normalize_email(changes["email"])
        except UserError as exc:
            raise UserError(f"--email: {exc}") from None
        user.email = _unique(db, user, User.email, email, "--email")
    if "phone" in changes:
        try:
            phone = to_e164(changes["phone"], settings.phone_default_region)
        except PhoneError as exc:
            raise UserError(f"--phone: {exc}") from None
        user.phone = _unique(db, user, User.phone, phone, "--phone")
    for column in ("name", "given_name", "family_name"):
        if column in changes:
            try:
                setattr(user, column, clean_name(changes[column]))
            except AccountError:
                option = "--" + column.replace("_", "-")
                raise UserError(f"{option}: at most 200 characters, no control characters") from None
    if "preferred_username" in changes:
        user.preferred_username = _username(db, user, changes["preferred_username"])
    if "locale" in changes:
        user.locale = _locale(changes["locale"])
    if "zoneinfo" in changes:
        try:
            user.zoneinfo = clean_zoneinfo(changes["zoneinfo"])
        except UnknownTimeZone:
            raise UserError("--zoneinfo: not an IANA time zone (Europe/Berlin)") from None
    if "picture" in changes:
        try:
            user.picture = clean_picture(changes["picture"])
        except PictureRefused as exc:
            raise UserError(f"--picture: {said(exc)}") from None
    if "address" in changes:
        user.address = _address(changes["address"])
    for flag in ("email_verified", "phone_verified"):
        if flag in changes:
            setattr(user, flag, bool(changes[flag]))
    if "groups" in changes:
        _set_groups(db, user, changes["groups"])
    if user.email is None and user.phone is None:
        raise UserError("--email, --phone: an account needs an email address or a phone number")
    user.updated_at = now()
    db.flush()
    return user


def reset_link(db: Session, settings: Settings, user_id: str) -> str:
    """A one-time link to set a new password, as the forgotten-password page would email it."""
    user = get_user(db, user_id)
    if user.email is None:
        raise UserError(f"user {user_id} has no email address, which a reset link is for")
    token = links.issue(db, recovery.PURPOSE, user.id, user.email, recovery.LINK_LIFETIME)
    return links.url(settings.issuer, "/password/reset", token)


def live_sessions(db: Session, user_id: str) -> list[BrowserSession]:
    get_user(db, user_id)
    query = select(BrowserSession).where(
        BrowserSession.user_id == user_id, BrowserSession.ended_at.is_(None), BrowserSession.expires_at > now()
    )
    return list(db.scalars(query.order_by(BrowserSession.created_at)))


def end_sessions(db: Session, user_id: str, session_ids: Sequence[str]) -> int:
    """End those of the person's live sessions (every one when ``session_ids`` is empty); their
    grants are revoked with them."""
    live = {session.id for session in live_sessions(db, user_id)}
    unknown = [sid for sid in session_ids if sid not in live]
    if unknown:
        raise UserError(f"no live session {unknown[0]} of user {user_id}")
    for session_id in session_ids or sorted(live):
        end_session(db, session_id)
    return len(session_ids or live)


def grants_of(db: Session, user_id: str) -> list[Grant]:
    get_user(db, user_id)
    return list(db.scalars(select(Grant).where(Grant.user_id == user_id).order_by(Grant.created_at)))


def revoke_person_grants(db: Session, user_id: str, grant_ids: Sequence[str]) -> int:
    """Revoke those of the person's grants still in force (every one when ``grant_ids`` is empty),
    with their refresh tokens and access tokens."""
    active = {grant.id for grant in grants_of(db, user_id) if grant.revoked_at is None}
    unknown = [gid for gid in grant_ids if gid not in active]
    if unknown:
        raise UserError(f"no grant {unknown[0]} in force for user {user_id}")
    chosen = list(grant_ids) or sorted(active)
    revoke_grants(db, Grant.id.in_(chosen))
    return len(chosen)


def _unique(db: Session, user: User, column: Any, value: str, option: str) -> str:
    holder = db.scalar(select(User.id).where(column == value, User.id != user.id))
    if holder is not None:
        raise UserError(f"{option}: {value} is already another person's")
    return value


def _username(db: Session, user: User, raw: str) -> str | None:
    """Checked as the person's own change is (:mod:`.usernames`); an empty one removes it."""
    try:
        username = clean_username(raw)
        ensure_free(db, user.id, username)
    except UsernameRefused:
        raise UserError(f"--username: at most {MAX_USERNAME} printable characters") from None
    except UsernameTaken:
        raise UserError(f"--username: {raw.strip()} is already another person's") from None
    return username


def _locale(raw: str) -> str | None:
    """Checked as the person's own choice is (:mod:`.language_tags`). An empty one removes it, so
    that the request's language is used."""
    if not raw.strip():
        return None
    try:
        return clean_language_tag(raw)
    except LanguageTagRefused:
        raise UserError(f"--locale: a BCP 47 language tag (fa-IR) of at most {MAX_LANGUAGE_TAG} characters") from None


def _address(raw: str) -> dict[str, str] | None:
    """Checked as the person's own change is (:mod:`.postal_address`), from a JSON object."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise UserError('--address: a JSON object, like {"locality": "Berlin", "country": "Germany"}') from None
    try:
        return clean_address(value)
    except AddressRefused as exc:
        raise UserError(f"--address: {said(exc)}") from None


def _set_groups(db: Session, user: User, groups: Sequence[str]) -> None:
    names = sorted({group.strip() for group in groups if group.strip()})
    if any(len(name) > MAX_GROUP or not name.isprintable() for name in names):
        raise UserError(f"--group: at most {MAX_GROUP} printable characters")
    db.execute(delete(UserGroup).where(UserGroup.user_id == user.id))
    db.add_all(UserGroup(user_id=user.id, name=name) for name in names)
