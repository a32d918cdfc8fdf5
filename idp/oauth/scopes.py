"""Scopes the provider knows and the user claims each one releases (OpenID Connect Core §5.4)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..catalogs import N_
from ..storage import User, UserGroup
from .errors import InvalidScope

SUPPORTED = ("openid", "profile", "email", "phone", "groups", "offline_access")
USER_ONLY = frozenset({"openid", "offline_access"})
DESCRIPTIONS = {
    "openid": N_("Know who you are"),
    "profile": N_("See your name"),
    "email": N_("See your email address"),
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


PROFILE = ("name", "given_name", "family_name", "preferred_username", "zoneinfo", "locale")
"""The claims of OIDC Core §5.4's ``profile`` scope that the provider holds, besides ``updated_at``."""
CLAIMS = (*PROFILE, "updated_at", "email", "email_verified", "phone_number", "phone_number_verified", "groups")


def user_claims(db: Session, user: User, scopes: list[str] | set[str]) -> dict[str, object]:
    """The claims a person's granted scopes release, and no others; a claim the person has no
    value for is left out (OIDC Core §5.3.2). ``groups`` lists the names of the groups they are in."""
    claims: dict[str, object] = {}
    if "profile" in scopes:
        claims.update({name: getattr(user, name) for name in PROFILE if getattr(user, name)})
        claims["updated_at"] = user.updated_at
    if "groups" in scopes:
        query = select(UserGroup.name).where(UserGroup.user_id == user.id).order_by(UserGroup.name)
        claims["groups"] = list(db.scalars(query))
    if "email" in scopes and user.email:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email_verified)
    if "phone" in scopes and user.phone:
        claims["phone_number"] = user.phone
        claims["phone_number_verified"] = bool(user.phone_verified)
    return claims
