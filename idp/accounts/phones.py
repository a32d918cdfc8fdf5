"""Phone numbers, always kept as E.164 (``+989121234567``), parsed by ``phonenumbers``."""

from __future__ import annotations

import phonenumbers

from .digits import ascii_digits
from .errors import AccountError, Code


class PhoneError(AccountError, ValueError):
    """Not a phone number that can receive a message: ``too_long``, ``not_a_number`` (it does not
    parse: no country code?) or ``no_such_number``."""

    code = Code.INVALID_PHONE


def to_e164(value: str, default_region: str | None = None) -> str:
    """A national number needs ``default_region`` (``IR``: ``09121234567`` -> ``+989121234567``)."""
    value = ascii_digits(value.strip())
    if len(value) > 32:
        raise PhoneError("too_long")
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        raise PhoneError("not_a_number") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError("no_such_number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
