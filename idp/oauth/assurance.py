"""How strongly a sign-in showed who the person is, as the ``acr`` claim says it (OIDC Core §2):
``1`` for one factor, ``2`` for two different ones (a password and a code from an authenticator
app, say). ``mfa`` in ``amr`` (RFC 8176) only says there were several, and counts for none."""

from __future__ import annotations

from collections.abc import Iterable

ONE_FACTOR = "1"
TWO_FACTORS = "2"
ACR_VALUES = (ONE_FACTOR, TWO_FACTORS)


def acr_of(amr: Iterable[str]) -> str:
    """The ``acr`` of a sign-in made with the methods ``amr`` names."""
    return ONE_FACTOR if len(set(amr) - {"mfa"}) <= 1 else TWO_FACTORS


def meets(required: frozenset[str] | None, amr: Iterable[str]) -> bool:
    """Whether a sign-in made with ``amr`` reaches one of the ``required`` levels (any, when
    ``None``)."""
    return required is None or acr_of(amr) in required
