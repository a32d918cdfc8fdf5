"""Password hashing with argon2id (argon2-cffi), with rehash when the parameters change.

An unknown account is checked against a dummy hash made with the same parameters, so that a
sign-in costs the same whether or not the account exists.
"""

from __future__ import annotations

import os
import threading
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

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


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check ``password``; with no stored hash the same work is done and the answer is no."""
    try:
        with _running:
            return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
