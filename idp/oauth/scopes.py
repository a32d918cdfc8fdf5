"""Scopes the provider knows and the user claims each one releases (OpenID Connect Core §5.4)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..catalogs import N_
from ..storage import User, UserGroup
from .errors import InvalidScope

SUPPORTED = ("openid", "profile", "email", "address", "phone", "groups", "offline_access")
USER_ONLY = frozenset({"openid", "offline_access"})
DESCRIPTIONS = {
    "openid": N_("Know who you are"),
    "profile": N_("See your name, username, picture, language and time zone"),
    "email": N_("See your email address"),
    "address": N_("See your postal address"),
    "phone": N_("See your phone number"),
    "groups": N_("See the groups you belong to"),
    "offline_access": N_("Stay signed in to the app when you are away"),
}
MAX_SCOPE_LENGTH = 1000


def parse(value: str | None) -> list[str]:
    """Split a scope string, keeping order and dropping repeats; refuse what cannot be a scope."""
    if value is None:
        return []
    if len(value) > MAX_SCOPE_LENGTH:
        raise InvalidScope("scope is too long")
    out: list[str] = []
    for item in value.split(" "):
        if not item:
            continue
        if not all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in item):
            raise InvalidScope("scope holds characters RFC 6749 §3.3 does not allow")
        if item not in out:
            out.append(item)
    return out


def check_allowed(requested: list[str], allowed: set[str]) -> None:
    unknown = [s for s in requested if s not in allowed]
    if unknown:
        raise InvalidScope(f"scope not allowed for this client: {' '.join(unknown)}")


PROFILE = ("name", "given_name", "family_name", "preferred_username", "picture", "zoneinfo", "locale")
"""The claims of OIDC Core §5.4's ``profile`` scope that the provider holds, besides ``updated_at``."""
RELEASED = {
    "profile": (*PROFILE, "updated_at"),
    "email": ("email", "email_verified"),
    "address": ("address",),
    "phone": ("phone_number", "phone_number_verified"),
    "groups": ("groups",),
}
"""Each scope and the claims it releases (OIDC Core §5.4; ``groups`` is the provider's own)."""
CLAIMS = tuple(claim for claims in RELEASED.values() for claim in claims)
"""Every claim about a person the provider holds: what a ``claims`` request may ask for by name."""


def claims_of(scopes: list[str] | set[str]) -> list[str]:
    """The claims ``scopes`` release, in :data:`CLAIMS`'s order."""
    return [claim for scope, claims in RELEASED.items() if scope in scopes for claim in claims]


def user_claims(
    db: Session, user: User, scopes: list[str] | set[str], requested: list[str] | tuple[str, ...] = ()
) -> dict[str, object]:
    """The claims the person's granted scopes release, and those of :data:`CLAIMS` an app asked for
    by name (``requested``, OIDC Core §5.5), and no others; a claim the person has no value for
    is left out (OIDC Core §5.3.2). ``groups`` lists the names of the groups they are in; a
    ``*_verified`` flag comes only with the address or number it is about."""
    return _claims(db, user, wanted(scopes, requested))


def every_claim(db: Session, user: User) -> dict[str, object]:
    """Every claim the person has a value for: what a process keeps of them, to release from."""
    return _claims(db, user, set(CLAIMS))


def wanted(scopes: list[str] | set[str], requested: list[str] | tuple[str, ...] = ()) -> set[str]:
    """The claims ``scopes`` release together with those asked for by name."""
    return set(claims_of(scopes)) | {claim for claim in requested if claim in CLAIMS}


def _claims(db: Session, user: User, wanted: set[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for claim in CLAIMS:
        if claim not in wanted:
            continue
        value = _value(db, user, claim)
        if value is not None:
            values[claim] = value
    return values


def _value(db: Session, user: User, claim: str) -> object:
    if claim == "groups":
        query = select(UserGroup.name).where(UserGroup.user_id == user.id).order_by(UserGroup.name)
        return list(db.scalars(query))
    if claim == "email_verified":
        return bool(user.email_verified) if user.email else None
    if claim == "phone_number":
        return user.phone
    if claim == "phone_number_verified":
        return bool(user.phone_verified) if user.phone else None
    value = getattr(user, claim)
    return value if value or claim == "updated_at" else None
