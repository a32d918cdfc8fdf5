"""Password hashes in Django's formats, as an import brings them, read with libpass (passlib).

Django writes ``algorithm$...``. Its ``argon2`` is argon2-cffi's own encoding behind the word
``argon2`` (``argon2$argon2id$v=19$...``): it is kept without that word, as idp's own hashes are,
and argon2-cffi verifies it. The other four are kept exactly as Django wrote them until their
owner signs in and they are replaced by argon2id (:func:`idp.accounts.authentication.sign_in_with_password`).
A hash starting with ``!`` is Django's unusable password: the person has none.

What verifying one of the four costs is its work factor's: pbkdf2 of 260,000 to 1,000,000 rounds
across Django's releases, bcrypt of a cost of 12 or more; and an export mixes them, since a person
who has not signed in for years keeps the hash of the release they last signed in under. So that
the time of an answer tells no one whether an address is unknown, an argon2 account or an imported
one of some kind, each cost class still kept (a format and work factor: the hash up to its salt) has
a decoy, a hash idp made of a random password in that class (:class:`~idp.storage.LegacyHashClass`),
and every password sign-in verifies one hash of each class (the person's own for their class, the
decoy for every other) and one argon2 hash: it costs one argon2 verification plus the sum of the
classes kept. Once nobody keeps a hash of a class it is forgotten (at once when the last imported
person signs in, otherwise by the hourly cleanup), and once everyone imported has signed in, a
sign-in costs one argon2 verification again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError
from sqlalchemy import delete, exists, func, select, text
from sqlalchemy.orm import Session

from ..storage import LegacyHashClass, User, changed_rows
from ..storage.people import LEGACY_PASSWORD

if TYPE_CHECKING:
    from passlib.ifc import PasswordHash

DJANGO_ARGON2 = "argon2"
UNUSABLE = "!"
MAX_PBKDF2_ROUNDS = 2_000_000
"""Above Django 6.0's 1,200,000, the most its releases have used."""
MAX_BCRYPT_COST = 13
"""Django's bcrypt hashers use 12."""
MAX_ARGON2_MEMORY_KIB = 262_144
MAX_ARGON2_TIME_COST = 16
"""Django's argon2 hasher uses 100 MiB and 2 passes; idp's own 64 MiB and 3."""
COST_CLASSES_LOCK = 7_263_948_102
"""The PostgreSQL advisory lock a transaction holds while it records or forgets cost classes."""


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


class TooCostlyHash(UnknownHashFormat):
    """A hash whose work factor is past any Django release's: every password sign-in verifies a
    hash of its cost class, so one line could make each take minutes (and an argon2 hash's memory
    is held by whoever signs in as its person)."""


def stored_form(django_hash: str) -> str | None:
    """What idp keeps for a Django-format hash (``None``: no password), or :class:`UnknownHashFormat`."""
    if django_hash.startswith(UNUSABLE):
        return None
    algorithm = django_hash.split("$", 1)[0]
    if algorithm == DJANGO_ARGON2:
        own = django_hash.removeprefix(DJANGO_ARGON2)
        try:
            parameters = extract_parameters(own)
        except InvalidHashError:
            raise UnknownHashFormat("password: not a well-formed argon2 hash") from None
        if parameters.memory_cost > MAX_ARGON2_MEMORY_KIB or parameters.time_cost > MAX_ARGON2_TIME_COST:
            raise TooCostlyHash(
                f"password: argon2 of at most {MAX_ARGON2_MEMORY_KIB} KiB and {MAX_ARGON2_TIME_COST} passes"
            )
        return own
    verifier = verifiers().get(algorithm)
    if verifier is None:
        raise UnknownHashFormat(f"password: {algorithm!r} is not a hash format idp reads")
    # Parsed, not verified: a verification would cost a hash's whole work factor on every line.
    try:
        rounds = _parsed(verifier, django_hash).rounds
    except ValueError:
        raise UnknownHashFormat(f"password: not a well-formed {algorithm} hash") from None
    most = MAX_PBKDF2_ROUNDS if algorithm.startswith("pbkdf2_") else MAX_BCRYPT_COST
    if rounds > most:
        raise TooCostlyHash(f"password: {algorithm} of a work factor of at most {most}")
    return django_hash


def _parsed(verifier: type[PasswordHash], django_hash: str) -> Any:
    """The hash as libpass reads it (its ``rounds``, salt and digest). ``django_bcrypt`` is bcrypt
    behind the prefix ``bcrypt$``, and parses as bcrypt."""
    parser = getattr(verifier, "wrapped", verifier)
    return parser.from_string(django_hash.removeprefix(getattr(verifier, "prefix", "")))


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


def cost_class(stored_hash: str) -> str:
    """A kept Django-format hash's cost class: what every hash of its format and work factor
    begins with, up to the salt (``pbkdf2_sha256$600000$``, ``bcrypt$$2b$12$``); hashes of a
    class differ only in salt and digest, and cost the same to verify. pbkdf2 writes its salt and
    digest as two fields, bcrypt as one."""
    fields = 2 if stored_hash.startswith("pbkdf2_") else 1
    return stored_hash.rsplit("$", fields)[0] + "$"


def decoy_like(stored_hash: str) -> str:
    """A hash of a random password in ``stored_hash``'s cost class, made by libpass: what a
    sign-in verifies for that class when the person's own hash is not of it. Never a person's
    hash: a guessed password is checked against no one's but the account's own."""
    verifier = verifiers()[stored_hash.split("$", 1)[0]]
    rounds = _parsed(verifier, stored_hash).rounds
    return str(verifier.using(rounds=rounds).hash(secrets.token_urlsafe(32)))


def record_cost_classes(db: Session, stored_hashes: Iterable[str]) -> list[str]:
    """Give each cost class of these hashes (those in a Django format) a decoy, unless it has
    one; the classes that had none. Called in the transaction that keeps the hashes, so that no
    hash is kept without its class being verified by every sign-in."""
    by_class = {cost_class(stored): stored for stored in stored_hashes if is_legacy(stored)}
    if not by_class:
        return []
    _hold_cost_classes(db)
    known = set(db.scalars(select(LegacyHashClass.prefix).where(LegacyHashClass.prefix.in_(by_class))))
    new = sorted(prefix for prefix in by_class if prefix not in known)
    db.add_all(LegacyHashClass(prefix=prefix, decoy=decoy_like(by_class[prefix])) for prefix in new)
    return new


def cost_class_decoys(db: Session) -> dict[str, str]:
    """Each cost class kept, with its decoy: a read of a table of a row or a few, on every
    password sign-in."""
    return {prefix: decoy for prefix, decoy in db.execute(select(LegacyHashClass.prefix, LegacyHashClass.decoy))}


def forget_cost_classes(db: Session) -> int:
    """Forget each cost class nobody keeps a hash of any more (its people signed in, reset their
    password or left): sign-ins no longer verify its decoy. How many went."""
    _hold_cost_classes(db)
    prefix_length = func.length(LegacyHashClass.prefix)
    kept = exists().where(
        text(LEGACY_PASSWORD), func.substr(User.password_hash, 1, prefix_length) == LegacyHashClass.prefix
    )
    return changed_rows(db.execute(delete(LegacyHashClass).where(~kept)))


def replaced_legacy_hash(db: Session) -> None:
    """A sign-in replaced a Django-format hash by argon2id (the change not yet committed). If it
    was the last one kept, sign-ins cost one argon2 verification again at once, not only after the
    next cleanup."""
    if db.scalar(select(User.id).where(text(LEGACY_PASSWORD)).limit(1)) is None:
        forget_cost_classes(db)


def _hold_cost_classes(db: Session) -> None:
    """Until the transaction ends, no other may record or forget cost classes: a class forgotten
    while an import that relies on its row has yet to commit would leave that import's hashes
    without their decoy. On PostgreSQL an advisory lock, taken before the classes are read; SQLite
    runs one writing transaction at a time, and both write before they read the classes."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text(f"SELECT pg_advisory_xact_lock({COST_CLASSES_LOCK})"))
