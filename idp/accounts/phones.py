"""Phone numbers, always kept as E.164 (``+989121234567``), parsed by ``phonenumbers``."""

from __future__ import annotations

import phonenumbers


class PhoneError(ValueError):
    """Not a phone number that can receive a message."""


def to_e164(value: str, default_region: str | None = None) -> str:
    """A national number needs ``default_region`` (``IR``: ``09121234567`` -> ``+989121234567``)."""
    value = value.strip()
    if len(value) > 32:
        raise PhoneError("that phone number is too long")
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        raise PhoneError("that is not a phone number; write it with its country code, like +14155550100") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError("that phone number does not exist; check the digits and the country code")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
