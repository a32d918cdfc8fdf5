"""The words one-time codes and emailed links are stored under: what each is for, and how it goes.

The values are what the database holds (``one_time_codes.purpose``, ``action_tokens.purpose``,
``users.mfa_method``, a pending sign-in's ``channel``) and what audit events record, so they never
change; a member compares equal to its stored string.
"""

from __future__ import annotations

from enum import StrEnum


class Purpose(StrEnum):
    """What a one-time code or a link is for; each has a resend budget of its own."""

    SIGN_IN = "sign_in"
    SECOND_FACTOR = "second_factor"
    VERIFY_PHONE = "verify_phone"
    ENABLE_MFA = "enable_mfa"
    SET_PASSWORD = "set_password"
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"
    CHANGE_EMAIL = "change_email"


class Channel(StrEnum):
    """How a code reaches a person; ``totp`` is the one made by their own authenticator app."""

    EMAIL = "email"
    SMS = "sms"
    TOTP = "totp"


class SecondFactorMethod(StrEnum):
    """A user's second factor (``User.mfa_method``): the channel its codes come by."""

    TOTP = "totp"
    EMAIL = "email"
    SMS = "sms"
