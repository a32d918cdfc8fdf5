"""Password hashing with argon2id (argon2-cffi), with rehash when the parameters change.

An unknown account is checked against a dummy hash made with the same parameters, so that a
sign-in costs the same whether or not the account exists. A hash an import brought in a Django
format (:mod:`.legacy_hashes`) is verified by libpass and always needs a rehash; while any is
kept, a sign-in also verifies one hash of each cost class kept (the person's own, or the class's
decoy), so that every answer costs one argon2 verification plus the sum of the classes alike.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .legacy_hashes import cost_class, is_legacy, verify_legacy

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


def verify_password(stored_hash: str | None, password: str, decoys: Mapping[str, str] | None = None) -> bool:
    """Check ``password``; with no stored hash the same work is done and the answer is no.

    ``decoys`` are the cost classes of the Django-format hashes still kept, each with its decoy
    (:func:`.legacy_hashes.cost_class_decoys`). Each is verified once: the stored hash for its own
    class, the decoy for every other; and one argon2 hash, the stored one or the dummy. Whatever
    the account, that is one argon2 verification plus one of each class.
    """
    own = cost_class(stored_hash) if stored_hash is not None and is_legacy(stored_hash) else None
    for prefix, decoy in (decoys or {}).items():
        if prefix != own:
            with _running:
                verify_legacy(decoy, password)
    if stored_hash is not None and own is not None:
        _verify_argon2(_dummy_hash(), password)
        with _running:
            return verify_legacy(stored_hash, password)
    return _verify_argon2(stored_hash or _dummy_hash(), password) and stored_hash is not None


def _verify_argon2(stored_hash: str, password: str) -> bool:
    try:
        with _running:
            return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return is_legacy(stored_hash) or _hasher.check_needs_rehash(stored_hash)
