"""A person's postal address, as OpenID Connect Core §5.1.1 has the ``address`` claim: a JSON
object of strings, each part optional. It is checked the same wherever it is set (``/account``,
the account API, ``idp users update``, ``idp users import``), so every app reads it the same way.

``formatted`` is the whole address for display. A person who fills in the parts gets one made from
them (line by line, as §5.1.1 allows: ``\\n`` between lines), so an app that shows only
``formatted`` shows what they typed; an import may bring its own.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from .errors import AccountError, Code

MAX_LENGTH = {
    "formatted": 700,
    "street_address": 300,
    "locality": 100,
    "region": 100,
    "postal_code": 20,
    "country": 100,
}
"""The parts of an address, and the most characters each may have."""
PARTS = tuple(MAX_LENGTH)
ENTERED = PARTS[1:]
"""What a person types; ``formatted`` is made from these."""
MULTILINE = frozenset({"formatted", "street_address"})
"""Parts that may span lines (§5.1.1): a street address of two lines, the whole address."""


class AddressRefused(AccountError):
    """An address that cannot be kept: ``not_an_object`` (``parts``: those it may have),
    ``not_a_part`` (``part``: a member §5.1.1 does not define), ``not_text`` (``part``),
    ``too_long`` (``part``, ``max_length``) or ``control_characters`` (``part``)."""

    code = Code.INVALID_ADDRESS


def _clean_part(part: str, raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise AddressRefused("not_text", part=part)
    lines = [line.strip() for line in raw.replace("\r\n", "\n").strip().split("\n")]
    value = "\n".join(line for line in lines if line)
    if len(value) > MAX_LENGTH[part]:
        raise AddressRefused("too_long", part=part, max_length=MAX_LENGTH[part])
    allowed = "\n" if part in MULTILINE else ""
    if any(unicodedata.category(c) in ("Cc", "Cf") and c not in allowed for c in value):
        raise AddressRefused("control_characters", part=part)
    return value or None


def clean_address(raw: object) -> dict[str, str] | None:
    """The address to keep, its empty parts left out and ``formatted`` made from the others when
    it is not given; ``None`` when no part has a value (``null`` and ``{}`` among them). Raises
    :class:`AddressRefused`, also for what is not an object of parts at all (an import's line or
    the command line can give anything JSON holds)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise AddressRefused("not_an_object", parts=", ".join(PARTS))
    unknown = sorted(set(raw) - set(PARTS))
    if unknown:
        raise AddressRefused("not_a_part", part=unknown[0])
    address = {part: value for part in PARTS if (value := _clean_part(part, raw.get(part))) is not None}
    if not address:
        return None
    if "formatted" not in address:
        region_line = " ".join(address[part] for part in ("postal_code", "locality", "region") if part in address)
        lines = [address.get("street_address", ""), region_line, address.get("country", "")]
        address = {"formatted": "\n".join(line for line in lines if line), **address}
    return address
