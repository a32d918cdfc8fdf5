"""Which ways of signing in a deployment and a client offer: a password, or a one-time code.

``IDP_PASSWORD_SIGN_IN=off`` turns passwords off for everyone: people sign in (and a first
sign-in registers them) by a code to their email or phone only. Every surface that takes a
password for signing in (the sign-in page, the authorization challenge endpoint) asks
:func:`check_password_allowed` through :func:`~.authentication.sign_in_with_password`, so none can
forget it. A client registered with ``--sign-in code`` keeps passwords available but has its
sign-in lead with the code page, and a ``login_hint`` it sends gets its code at once.
"""

from __future__ import annotations

from ..settings import Settings
from .errors import AccountError, Code

PASSWORD = "password"
CODE = "code"
CHOICES = (PASSWORD, CODE)
"""A client's ``sign_in`` preference, as ``idp clients create --sign-in`` takes it."""


class PasswordSignInOff(AccountError):
    """A password was offered for signing in, but the deployment signs people in by code only."""

    code = Code.PASSWORD_SIGN_IN_OFF


def check_password_allowed(settings: Settings) -> None:
    """Raises :class:`PasswordSignInOff` when ``IDP_PASSWORD_SIGN_IN`` is off."""
    if not settings.password_sign_in:
        raise PasswordSignInOff


def leads_with_code(settings: Settings, preference: str | None) -> bool:
    """Whether a sign-in for a client of this ``preference`` starts at the code page: it does for
    a code-first client, and for every client when passwords are off."""
    return preference == CODE or not settings.password_sign_in
