"""One person as a JSON line: what ``idp users import`` reads and ``idp users export`` writes.

The fields are the contract's (OpenID Connect's claim names, ``id`` for the ``sub`` and
``password`` for a Django-format hash). A line is checked as the rest of idp checks the same
values (an email address as registration normalises it, a phone number as E.164), so an imported
person is one idp could have made itself. Fields a Django export may carry besides these
(``is_staff``, ``last_login``) are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..storage import User
from ..storage.people import ID_LENGTH, PASSWORD_HASH_LENGTH
from .language_tags import MAX_LANGUAGE_TAG, LanguageTagRefused, clean_language_tag
from .legacy_hashes import UnknownHashFormat, django_form, stored_form
from .phones import PhoneError, to_e164
from .picture import PictureRefused, clean_picture
from .postal_address import AddressRefused, clean_address
from .time_zones import UnknownTimeZone, clean_zoneinfo
from .usernames import MAX_USERNAME, UsernameRefused, clean_username
from .users import NameRefused, UserError, clean_name, normalize_email, said

MAX_GROUP = 150
_ID = re.compile(r"[\x21-\x7e]+")  # what an app holds as a sub: printable ASCII, no spaces
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
NAMES = ("name", "given_name", "family_name")
FLAGS = ("email_verified", "phone_number_verified")


class LineError(ValueError):
    """Why one line cannot be imported, as the operator reads it after ``line N: ``."""


@dataclass(frozen=True)
class PersonLine:
    """A checked line: the values as idp keeps them (``password`` in its stored form)."""

    id: str
    email: str | None
    email_verified: bool
    phone: str | None
    phone_verified: bool
    name: str | None
    given_name: str | None
    family_name: str | None
    preferred_username: str | None
    locale: str | None
    zoneinfo: str | None
    picture: str | None
    address: dict[str, str] | None
    groups: frozenset[str]
    created_at: int | None
    password_hash: str | None

    def unique_values(self) -> dict[str, str]:
        """What no two people may share, by the line's field names; only those the line has."""
        named = {"email": self.email, "phone_number": self.phone, "preferred_username": self.preferred_username}
        return {field: value for field, value in named.items() if value is not None}

    def profile(self) -> dict[str, Any]:
        """The columns a later import may change (never the password: see :mod:`.imports`)."""
        return {
            "email": self.email,
            "email_verified": self.email_verified,
            "phone": self.phone,
            "phone_verified": self.phone_verified,
            "name": self.name,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "preferred_username": self.preferred_username,
            "locale": self.locale,
            "zoneinfo": self.zoneinfo,
            "picture": self.picture,
            "address": self.address,
        } | ({"created_at": self.created_at} if self.created_at is not None else {})


def parse_line(text: str | bytes) -> PersonLine:
    """The person on one line, or :class:`LineError`."""
    try:
        fields = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise LineError("not a JSON object") from None
    if not isinstance(fields, dict):
        raise LineError("not a JSON object")
    person_id = fields.get("id")
    if not isinstance(person_id, str) or not person_id:
        raise LineError("id: required, a string")
    if len(person_id) > ID_LENGTH or not _ID.fullmatch(person_id):
        raise LineError(f"id: at most {ID_LENGTH} printable characters without spaces")
    email = _text(fields, "email")
    phone = _text(fields, "phone_number")
    if email is None and phone is None:
        raise LineError("email or phone_number: one is required")
    try:
        email = normalize_email(email) if email is not None else None
    except UserError as exc:
        raise LineError(f"email: {exc}") from None
    try:
        phone = _e164(phone) if phone is not None else None
    except PhoneError as exc:
        raise LineError(f"phone_number: {exc.reason.replace('_', ' ')}") from None
    names = {}
    for field in NAMES:
        try:
            names[field] = clean_name(_text(fields, field))
        except NameRefused as exc:
            raise LineError(f"{field}: {exc.reason.replace('_', ' ')}") from None
    flags = {field: fields.get(field, False) for field in FLAGS}
    for field, flag in flags.items():
        if not isinstance(flag, bool):
            raise LineError(f"{field}: true or false")
    password_hash = _password_hash(fields)
    return PersonLine(
        id=person_id,
        email=email,
        email_verified=flags["email_verified"] and email is not None,
        phone=phone,
        phone_verified=flags["phone_number_verified"] and phone is not None,
        name=names["name"],
        given_name=names["given_name"],
        family_name=names["family_name"],
        preferred_username=_username(fields),
        locale=_locale(fields),
        zoneinfo=_zoneinfo(fields),
        picture=_picture(fields),
        address=_address(fields),
        groups=_groups(fields),
        created_at=_created_at(fields),
        password_hash=password_hash,
    )


def line_of(user: User, groups: frozenset[str]) -> dict[str, Any]:
    """The line :func:`parse_line` reads back as this person."""
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "phone_number": user.phone,
        "phone_number_verified": user.phone_verified,
        "name": user.name,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "preferred_username": user.preferred_username,
        "locale": user.locale,
        "zoneinfo": user.zoneinfo,
        "picture": user.picture,
        "address": user.address,
        "groups": sorted(groups),
        "created_at": datetime.fromtimestamp(user.created_at, UTC).isoformat().replace("+00:00", "Z"),
        "password": django_form(user.password_hash),
    }


def _text(fields: dict[str, Any], field: str) -> str | None:
    value = fields.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LineError(f"{field}: a string")
    return value


def _password_hash(fields: dict[str, Any]) -> str | None:
    """The hash as idp keeps it. Django's formats take a salt of any length, but the column does
    not: on PostgreSQL a longer value would fail the insert of the line's whole batch."""
    password = _text(fields, "password")
    try:
        password_hash = stored_form(password) if password is not None else None
    except UnknownHashFormat as exc:
        raise LineError(str(exc)) from None
    if password_hash is not None and len(password_hash) > PASSWORD_HASH_LENGTH:
        raise LineError(f"password: at most {PASSWORD_HASH_LENGTH} characters")
    return password_hash


def _e164(value: str) -> str:
    """Only a number with its country code: a file has no region to read a national one in."""
    if not value.strip().startswith("+"):
        raise PhoneError("not_a_number")
    return to_e164(value)


def _username(fields: dict[str, Any]) -> str | None:
    try:
        return clean_username(_text(fields, "preferred_username"))
    except UsernameRefused:
        raise LineError(f"preferred_username: at most {MAX_USERNAME} printable characters") from None


def _zoneinfo(fields: dict[str, Any]) -> str | None:
    try:
        return clean_zoneinfo(_text(fields, "zoneinfo"))
    except UnknownTimeZone:
        raise LineError("zoneinfo: not an IANA time zone (Europe/Berlin)") from None


def _picture(fields: dict[str, Any]) -> str | None:
    try:
        return clean_picture(_text(fields, "picture"))
    except PictureRefused as exc:
        raise LineError(f"picture: {said(exc)}") from None


def _address(fields: dict[str, Any]) -> dict[str, str] | None:
    """An object of OpenID Connect's address parts (``null`` or ``{}``: none)."""
    try:
        return clean_address(fields.get("address"))
    except AddressRefused as exc:
        raise LineError(f"address: {said(exc)}") from None


def _locale(fields: dict[str, Any]) -> str | None:
    value = _text(fields, "locale")
    try:
        return None if value is None else clean_language_tag(value)
    except LanguageTagRefused:
        raise LineError(f"locale: not a BCP 47 language tag of at most {MAX_LANGUAGE_TAG} characters (fa-IR)") from None


def _groups(fields: dict[str, Any]) -> frozenset[str]:
    groups = fields.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
        raise LineError("groups: a list of strings")
    if any(not group.strip() or len(group) > MAX_GROUP or not group.isprintable() for group in groups):
        raise LineError(f"groups: each a name of 1 to {MAX_GROUP} printable characters")
    return frozenset(group.strip() for group in groups)


def _created_at(fields: dict[str, Any]) -> int | None:
    value = _text(fields, "created_at")
    if value is None:
        return None
    if not _RFC3339.match(value):
        raise LineError("created_at: not an RFC 3339 time (2024-05-01T12:00:00Z)")
    try:
        return int(datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise LineError("created_at: not an RFC 3339 time (2024-05-01T12:00:00Z)") from None
