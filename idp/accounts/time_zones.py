"""A person's time zone (``zoneinfo``): an IANA time zone name, as OpenID Connect's claim is,
checked against the zones the time zone database knows: the system's, else the ``tzdata``
package's, a dependency so that a slim container without ``/usr/share/zoneinfo`` knows them too."""

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
