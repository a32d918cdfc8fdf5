"""Phone numbers become E.164 through ``phonenumbers``; anything else gets a message a person can act on."""

from __future__ import annotations

import pytest

from idp.accounts.phones import PhoneError, to_e164

from .refusals import refused_saying


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+14155550100", None, "+14155550100"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("09121234567", "IR", "+989121234567"),
        ("+98 912 123 4567", None, "+989121234567"),
        ("+98 912 123 4567", "US", "+989121234567"),
        ("  +1 415-555-0100  ", None, "+14155550100"),
    ],
)
def test_numbers_become_e164(raw: str, region: str | None, expected: str) -> None:
    assert to_e164(raw, region) == expected


def test_a_national_number_needs_a_region() -> None:
    with refused_saying(PhoneError, "country code"):
        to_e164("09121234567")


@pytest.mark.parametrize(
    "raw",
    ["+1 415 555", "+98 912 123", "+14155550100123", "0912", "+999 1234567"],
)
def test_numbers_that_do_not_exist_are_refused(raw: str) -> None:
    with refused_saying(PhoneError, "phone number"):
        to_e164(raw, "IR")


@pytest.mark.parametrize("raw", ["garbage", "", "   ", "@@@", "not a number at all", "+"])
def test_garbage_is_refused_with_the_way_to_write_it(raw: str) -> None:
    with refused_saying(PhoneError, r"not a phone number; write it with its country code, like \+14155550100"):
        to_e164(raw)


def test_over_long_input_is_refused_before_parsing() -> None:
    with refused_saying(PhoneError, "too long"):
        to_e164("+98" + "9" * 40, "IR")
    with refused_saying(PhoneError, "too long"):
        to_e164("+1 " + " " * 10 + "4" * 30)


def test_the_error_is_a_value_error_for_callers_that_parse_input() -> None:
    assert issubclass(PhoneError, ValueError)
