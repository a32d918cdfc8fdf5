"""People who sign in, the passwords they used before, their groups, and their second factor."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

ID_LENGTH = 64
PASSWORD_HASH_LENGTH = 255
"""The most characters a kept hash has: argon2id's own take about 100, and an import refuses a
longer Django one (their formats take a salt of any length)."""
LEGACY_PASSWORD = "password_hash NOT LIKE '$%'"
"""A stored hash not in argon2's own ``$argon2id$...`` form: one a Django system made."""


class User(Base):
    """``registration_browser_hash`` is the digest of the registration cookie of the browser that
    registered the account on ``/register`` and chose its password, kept until the account first
    proves anything (its address verified, or a sign-in): only that browser is signed in by a
    verification link, and a registration still holding it after the link's lifetime is removed by
    cleanup (:mod:`idp.accounts.registration`).

    ``id`` is the ``sub`` apps see: 32 characters for the people idp makes, up to 64 for those
    imported with the id their old system gave them (a Django integer, a UUID).
    ``password_hash`` is an argon2 hash, or a Django-format one an import brought
    (:mod:`idp.accounts.legacy_hashes`) until its owner next signs in."""

    __tablename__ = "users"
    __table_args__ = (
        # Tells in one index step whether a hash an import brought is left, and finds those of a
        # cost class among them alone (:func:`idp.accounts.legacy_hashes.forget_cost_classes`);
        # it costs nothing once the last one is gone. It is partial,
        # WHERE LEGACY_PASSWORD, as migration 0015 and :mod:`idp.migrate` create it; Alembic's
        # comparison with the models does not look at the condition. Saying it here would take
        # ``postgresql_where``, which loads SQLAlchemy's PostgreSQL dialect (some 2.5 MB a process)
        # on SQLite too.
        Index("ix_users_legacy_password", "id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    phone_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    phone_verified_at: Mapped[int | None] = mapped_column(BigInteger)
    """When the number was verified from a signed-in session; ``None`` for one the account came with."""
    name: Mapped[str | None] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str | None] = mapped_column(String(200))
    preferred_username: Mapped[str | None] = mapped_column(String(150), index=True, unique=True)
    zoneinfo: Mapped[str | None] = mapped_column(String(64))
    picture: Mapped[str | None] = mapped_column(String(2000))
    """A URL of the person's picture (:mod:`idp.accounts.picture`)."""
    address: Mapped[dict[str, str] | None] = mapped_column(JSON)
    """The person's postal address as OpenID Connect's ``address`` claim has it
    (:mod:`idp.accounts.postal_address`)."""
    password_hash: Mapped[str | None] = mapped_column(String(PASSWORD_HASH_LENGTH))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[int | None] = mapped_column(BigInteger)
    identity_confirmed_at: Mapped[int | None] = mapped_column(BigInteger)
    """When the person last gave their password (to sign in, or to the "confirm it is you" check) or
    followed a reset link: what a stolen session cannot do."""
    mfa_method: Mapped[str | None] = mapped_column(String(8))
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    registration_browser_hash: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(16))
    """The language the person chose (a tag with a catalog, ``fa``): their pages and messages use it."""
    terms_version: Mapped[str | None] = mapped_column(String(64))
    """The version of the terms (``IDP_TERMS_VERSION``) the person last accepted, and when."""
    terms_accepted_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class LegacyHashClass(Base):
    """A cost class of the Django-format hashes an import brought (their format and work factor:
    what each begins with up to its salt, ``prefix``), while any hash of it is kept, with a hash of
    a random password that idp made in that class: the ``decoy`` a password sign-in verifies for
    each class but the person's own (:mod:`idp.accounts.legacy_hashes`). A row or a few, read by
    every password sign-in."""

    __tablename__ = "legacy_hash_classes"

    prefix: Mapped[str] = mapped_column(String(PASSWORD_HASH_LENGTH), primary_key=True)
    decoy: Mapped[str] = mapped_column(String(PASSWORD_HASH_LENGTH))


class PasswordHistory(Base):
    """Hashes of a person's earlier passwords, so the last few cannot be used again."""

    __tablename__ = "password_history"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)


class RecoveryCode(Base):
    """One-time recovery codes for a person who lost their second factor; kept as keyed hashes."""

    __tablename__ = "recovery_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger)


class UserGroup(Base):
    """A person's membership of a named group (Django's ``auth_group``, by name)."""

    __tablename__ = "user_groups"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(150), primary_key=True, index=True)
