"""Password hashing with argon2id (argon2-cffi), with rehash when the parameters change.

An unknown account is checked against a dummy hash made with the same parameters, so that a
sign-in costs the same whether or not the account exists. A hash an import brought in a Django
format (:mod:`.legacy_hashes`) is verified by libpass and always needs a rehash; while any is
kept, a sign-in also verifies against a decoy so that every answer costs one argon2 and one
legacy verification alike.
"""

from __future__ import annotations

import os
import threading
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .legacy_hashes import is_legacy, verify_legacy

_hasher = PasswordHasher()
# Each hash holds 64 MiB while it runs and keeps a core busy: more at once than there are cores
# only adds memory (a burst of sign-ins would otherwise hold one block per server thread), not speed.
_running = threading.BoundedSemaphore(os.cpu_count() or 1)


def hash_password(password: str) -> str:
    with _running:
        return _hasher.hash(password)


@cache
def _dummy_hash() -> str:
    return _hasher.hash("an account that does not exist")


def verify_password(stored_hash: str | None, password: str, decoy: str | None = None) -> bool:
    """Check ``password``; with no stored hash the same work is done and the answer is no.

    ``decoy`` is a legacy hash to spend the same work on when the stored one is not legacy
    (:func:`.legacy_hashes.decoy_hash`); a legacy stored hash spends the argon2 work instead.
    """
    if stored_hash is not None and is_legacy(stored_hash):
        _verify_argon2(_dummy_hash(), password)
        with _running:
            return verify_legacy(stored_hash, password)
    if decoy is not None:
        with _running:
            verify_legacy(decoy, password)
    return _verify_argon2(stored_hash or _dummy_hash(), password) and stored_hash is not None


def _verify_argon2(stored_hash: str, password: str) -> bool:
    try:
        with _running:
            return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return is_legacy(stored_hash) or _hasher.check_needs_rehash(stored_hash)
