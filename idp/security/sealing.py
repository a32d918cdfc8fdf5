"""Sealing secrets the provider must read back later (outbox bodies, authenticator secrets), so
that a database dump shows none of them.

The Fernet key is derived from ``IDP_SECRET_KEY`` with HKDF under an ``info`` per purpose, so each
use is independent of every other use of that secret.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OUTBOX = b"idp outbox"
AUTHENTICATOR = b"idp authenticator"


class Sealer:
    def __init__(self, secret_key: str, purpose: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        """Raises ``cryptography.fernet.InvalidToken`` when sealed under another secret key."""
        return self._fernet.decrypt(sealed.encode()).decode()
