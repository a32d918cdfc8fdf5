"""Password hashes in Django's formats, as an import brings them, read with libpass (passlib).

Django writes ``algorithm$...``. Its ``argon2`` is argon2-cffi's own encoding behind the word
``argon2`` (``argon2$argon2id$v=19$...``): it is kept without that word, as idp's own hashes are,
and argon2-cffi verifies it. The other four are kept exactly as Django wrote them until their
owner signs in and they are replaced by argon2id (:func:`idp.accounts.authentication.sign_in_with_password`).
A hash starting with ``!`` is Django's unusable password: the person has none.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ..storage import User
from ..storage.people import LEGACY_PASSWORD

if TYPE_CHECKING:
    from passlib.ifc import PasswordHash

DJANGO_ARGON2 = "argon2"
UNUSABLE = "!"


@cache
def verifiers() -> dict[str, type[PasswordHash]]:
    """libpass's Django hashers by algorithm, imported on first use: most processes never meet
    a Django hash, and the library costs each of them about 8 MB."""
    from passlib.hash import django_bcrypt, django_bcrypt_sha256, django_pbkdf2_sha1, django_pbkdf2_sha256

    return {
        "pbkdf2_sha256": django_pbkdf2_sha256,
        "pbkdf2_sha1": django_pbkdf2_sha1,
        "bcrypt_sha256": django_bcrypt_sha256,
        "bcrypt": django_bcrypt,
    }


class UnknownHashFormat(ValueError):
    """A hash in none of the formats idp reads; the message says which it seemed to be."""


def stored_form(django_hash: str) -> str | None:
    """What idp keeps for a Django-format hash (``None``: no password), or :class:`UnknownHashFormat`."""
    if django_hash.startswith(UNUSABLE):
        return None
    algorithm = django_hash.split("$", 1)[0]
    if algorithm == DJANGO_ARGON2:
        own = django_hash.removeprefix(DJANGO_ARGON2)
        try:
            extract_parameters(own)
        except InvalidHashError:
            raise UnknownHashFormat("password: not a well-formed argon2 hash") from None
        return own
    verifier = verifiers().get(algorithm)
    if verifier is None:
        raise UnknownHashFormat(f"password: {algorithm!r} is not a hash format idp reads")
    # Parsed, not verified: a verification would cost a hash's whole work factor on every line.
    # ``django_bcrypt`` is bcrypt behind the prefix ``bcrypt$``, and parses as bcrypt.
    parser = getattr(verifier, "wrapped", verifier)
    try:
        parser.from_string(django_hash.removeprefix(getattr(verifier, "prefix", "")))
    except ValueError:
        raise UnknownHashFormat(f"password: not a well-formed {algorithm} hash") from None
    return django_hash


def django_form(stored_hash: str | None) -> str:
    """The hash as Django writes it, for the way back: the inverse of :func:`stored_form`."""
    if stored_hash is None:
        return UNUSABLE
    return DJANGO_ARGON2 + stored_hash if stored_hash.startswith("$argon2") else stored_hash


def is_legacy(stored_hash: str) -> bool:
    """What :data:`~idp.storage.people.LEGACY_PASSWORD` selects in SQL."""
    return not stored_hash.startswith("$")


def verify_legacy(stored_hash: str, password: str) -> bool:
    verifier = verifiers().get(stored_hash.split("$", 1)[0])
    if verifier is None:
        return False
    try:
        return bool(verifier.verify(password, stored_hash))
    except ValueError:  # a malformed hash, or a password bcrypt refuses
        return False


def decoy_hash(db: Session) -> str | None:
    """A Django-format hash still kept, while any is: every password sign-in verifies against one
    besides the hash it really checks, so that its cost does not tell a stranger whether the
    account is unknown, has an argon2 hash, or has a hash from the import (a pbkdf2 of a million
    rounds costs several argon2 verifications). Once everyone imported has signed in, sign-ins cost
    one argon2 verification again."""
    return db.scalar(select(User.password_hash).where(text(LEGACY_PASSWORD)).limit(1))
