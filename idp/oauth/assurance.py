"""How strongly a sign-in showed who the person is, as the ``acr`` claim says it (OIDC Core §2):
``1`` for one factor, ``2`` once a second factor of the person's was verified (an authenticator
app's code after a password or an emailed code, say), which is what ``mfa`` in ``amr`` (RFC 8176)
records: the methods alone cannot say it, as an emailed code and an authenticator's are both
``otp``."""

from __future__ import annotations

from collections.abc import Iterable

ONE_FACTOR = "1"
TWO_FACTORS = "2"
ACR_VALUES = (ONE_FACTOR, TWO_FACTORS)


def acr_of(amr: Iterable[str]) -> str:
    """The ``acr`` of a sign-in made with the methods ``amr`` names."""
    return TWO_FACTORS if "mfa" in amr else ONE_FACTOR


def meets(required: frozenset[str] | None, amr: Iterable[str]) -> bool:
    """Whether a sign-in made with ``amr`` reaches one of the ``required`` levels (any, when
    ``None``)."""
    return required is None or acr_of(amr) in required


def step_up_reaches(required: frozenset[str] | None, amr: Iterable[str]) -> bool:
    """Whether signing in again, now with the second factor, would reach what ``required``
    insists on where a sign-in made with ``amr`` does not: only from one factor to two."""
    return required is not None and not meets(required, amr) and TWO_FACTORS in required and acr_of(amr) == ONE_FACTOR
