"""A person's profile picture (``picture``, OpenID Connect Core §5.1): the URL of an image that
apps show, so it must be one a browser fetches safely from any page. Only ``https`` is taken, and
``http`` on the loopback interface for a developer's own machine: an ``http`` picture elsewhere
would be mixed content on every app that shows it, and ``javascript:`` or ``data:`` no picture."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import AccountError, Code

MAX_PICTURE = 2000
LOOPBACK_NAMES = frozenset({"localhost"})


class PictureRefused(AccountError):
    """A picture URL that cannot be kept: ``too_long`` (``max_length``), ``not_a_url`` (no host,
    spaces or control characters, a user name or password in it) or ``not_https``."""

    code = Code.INVALID_PICTURE


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def clean_picture(raw: str | None) -> str | None:
    """The URL to keep, without the spaces around it (``None`` for an empty one), or
    :class:`PictureRefused`."""
    url = (raw or "").strip()
    if not url:
        return None
    if len(url) > MAX_PICTURE:
        raise PictureRefused("too_long", max_length=MAX_PICTURE)
    if not url.isascii() or not url.isprintable() or " " in url:
        raise PictureRefused("not_a_url")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # a port that is no number raises here
    except ValueError:
        raise PictureRefused("not_a_url") from None
    if parts.scheme.lower() not in ("https", "http") or not host or parts.username or parts.password:
        raise PictureRefused("not_a_url")
    if parts.scheme.lower() == "http" and not _loopback(host):
        raise PictureRefused("not_https")
    return url
