"""A person's time zone (``zoneinfo``): an IANA time zone name, as OpenID Connect's claim is,
checked against the zones this system's time zone database knows."""

from __future__ import annotations

import functools
import zoneinfo

from .errors import AccountError, Code


class UnknownTimeZone(AccountError):
    """Not the name of an IANA time zone (``Europe/Berlin``)."""

    code = Code.UNKNOWN_TIME_ZONE


@functools.cache
def known_zones() -> frozenset[str]:
    """Read once: the database does not change while the process runs."""
    return frozenset(zoneinfo.available_timezones())


def clean_zoneinfo(raw: str | None) -> str | None:
    """The zone to keep (``None`` for an empty one), or :class:`UnknownTimeZone`."""
    zone = (raw or "").strip()
    if zone and zone not in known_zones():
        raise UnknownTimeZone
    return zone or None
