"""RSA signing keys kept as PEM files in ``IDP_KEYS_DIR``.

The directory is the only shared state: every process reads it, so a key rotated with the CLI is
picked up by every running worker without a restart. A file is named ``<created>-<kid>.pem``; the
newest file is the active key, every file is published in the JWKS, and retiring a key deletes its
file. The ``kid`` is always recomputed as the RFC 7638 thumbprint, never trusted from the name.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

_KEY_FILE = re.compile(r"^(\d{8}T\d{12}Z)-[A-Za-z0-9_-]+\.pem$")
_STAMP = "%Y%m%dT%H%M%S%fZ"
SECRET_KEY_FILE = "secret.key"
CHECK_INTERVAL = 1.0
ALGORITHMS = ["RS256"]
VERIFIED_KEPT = 1024
"""Tokens whose signature a snapshot remembers having verified: about 3 MB a process, tokens included."""


class KeyStoreError(Exception):
    """A key operation cannot be done; the message says why."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: RSAKey
    created_at: float
    path: Path


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by the owner only; never overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class KeyStore:
    """The keys directory: what the CLI changes and every server process reads."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> list[SigningKey]:
        """Every key on disk, oldest first."""
        if not self.directory.is_dir():
            return []
        keys = []
        for path in sorted(self.directory.iterdir()):
            match = _KEY_FILE.match(path.name)
            if not match:
                continue
            key = RSAKey.import_key(path.read_bytes())
            created = datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC).timestamp()
            keys.append(SigningKey(kid=key.thumbprint(), key=key, created_at=created, path=path))
        keys.sort(key=lambda k: k.created_at)
        return keys

    def fingerprint(self) -> tuple[tuple[str, int], ...]:
        """Cheap to compute; changes whenever a key file is added, replaced or removed."""
        try:
            entries = os.scandir(self.directory)
        except FileNotFoundError:
            return ()
        with entries:
            return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in entries if e.name.endswith(".pem")))

    def rotate(self) -> SigningKey:
        """Make a new key; it becomes the active one, older keys stay published."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = RSAKey.generate_key(2048, private=True)
        kid = key.thumbprint()
        created = datetime.now(UTC)
        path = self.directory / f"{created.strftime(_STAMP)}-{kid}.pem"
        _write_private(path, key.as_pem(private=True))
        return SigningKey(kid=kid, key=key, created_at=created.timestamp(), path=path)

    def ensure(self) -> None:
        if not self.load():
            self.rotate()

    def retire(self, kid: str, *, published_for: int, force: bool = False) -> SigningKey:
        """Drop a key from the JWKS by deleting its file.

        The active key cannot be retired, and a key stays until every token it signed has expired
        (``published_for`` seconds after a newer key took over) unless ``force`` says it leaked.
        """
        keys = self.load()
        found = [i for i, k in enumerate(keys) if k.kid == kid]
        if not found:
            raise KeyStoreError(f"no key with kid {kid}")
        index = found[0]
        if index == len(keys) - 1:
            raise KeyStoreError(f"key {kid} is the active signing key: rotate first")
        # A running process may sign with the old key until it next looks at the directory.
        superseded_at = keys[index + 1].created_at + CHECK_INTERVAL
        wait = superseded_at + published_for - time.time()
        if wait > 0 and not force:
            raise KeyStoreError(
                f"key {kid} may still have signed valid tokens for {int(wait) + 1} s more; "
                "use --force only if the key leaked"
            )
        keys[index].path.unlink()
        return keys[index]

    def secret_key(self) -> str:
        """The generated ``IDP_SECRET_KEY`` stand-in, made once and kept beside the keys."""
        path = self.directory / SECRET_KEY_FILE
        if not path.exists():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                _write_private(path, secrets.token_urlsafe(48).encode())
            except FileExistsError:
                pass
        return path.read_text().strip()


@dataclass(frozen=True)
class KeySnapshot:
    active: SigningKey
    keyset: KeySet
    jwks_json: bytes
    decode: Callable[[str], jwt.Token]
    """A token whose signature one of ``keyset`` verifies, decoded (:func:`_decoder`)."""


def _decoder(keyset: KeySet) -> Callable[[str], jwt.Token]:
    """Resource servers and apps present the same access token again and again, and an RSA
    verification is the largest part of answering them: the last :data:`VERIFIED_KEPT` tokens
    found signed are kept, keyed by the whole token, so a token altered anywhere is verified
    afresh, and with the snapshot, so one whose key leaves the keyring is never found again. A
    token that fails is never kept. What is kept says only that the signature holds: expiry,
    issuer and revocation are for the caller to check each time."""

    @lru_cache(maxsize=VERIFIED_KEPT)
    def decode(token: str) -> jwt.Token:
        return jwt.decode(token, keyset, algorithms=ALGORITHMS)

    return decode


class KeyRing:
    """A process's view of the keys directory, rebuilt only when the directory changes.

    Signing and verifying use the snapshot; the directory is looked at no more than once per
    ``check_interval`` seconds, which bounds how long a rotation takes to reach every process.
    """

    def __init__(self, store: KeyStore, check_interval: float = CHECK_INTERVAL) -> None:
        self._store = store
        self._check_interval = check_interval
        self._lock = threading.Lock()
        self._fingerprint: tuple[tuple[str, int], ...] | None = None
        self._checked_at = 0.0
        self._snapshot: KeySnapshot | None = None

    def snapshot(self) -> KeySnapshot:
        now = time.monotonic()
        if self._snapshot is not None and now - self._checked_at < self._check_interval:
            return self._snapshot
        with self._lock:
            fingerprint = self._store.fingerprint()
            self._checked_at = now
            if self._snapshot is None or fingerprint != self._fingerprint:
                self._snapshot = self._build()
                self._fingerprint = fingerprint
            return self._snapshot

    def _build(self) -> KeySnapshot:
        keys = self._store.load()
        if not keys:
            raise KeyStoreError(f"no signing key in {self._store.directory}: run `idp keys rotate`")
        published = []
        for item in keys:
            public = RSAKey.import_key(item.key.as_dict(private=False))
            public.ensure_kid()
            published.append(public)
        document = {
            "keys": [
                {**k.as_dict(private=False), "kid": item.kid, "use": "sig", "alg": "RS256"}
                for k, item in zip(published, keys, strict=True)
            ]
        }
        keyset = KeySet([*published])
        return KeySnapshot(
            active=keys[-1],
            keyset=keyset,
            jwks_json=json.dumps(document, separators=(",", ":")).encode(),
            decode=_decoder(keyset),
        )
