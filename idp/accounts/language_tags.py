"""A person's ``locale``: a BCP 47 language tag (RFC 5646), as OpenID Connect Core §5.1 defines
the claim, kept as it was given wherever it is set (the account page and API, the command line, an
import). It need not name a language idp has a catalog for: the ``de-AT`` an imported system kept
is still the person's, for the apps that read the claim, while idp's own pages and messages are in
the nearest language it speaks (``fa-IR``: Persian), else in the request's (:mod:`idp.web.locale`).
"""

from __future__ import annotations

import re

from .errors import AccountError, Code

MAX_LANGUAGE_TAG = 16
"""The most characters kept: a language, script and region (``zh-Hant-TW``) fit with room."""
_SHAPE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")
"""A tag's shape (RFC 5646 §2.1): a language subtag of letters, then subtags of letters and digits."""


class LanguageTagRefused(AccountError):
    """Not a language tag: a ``locale`` like ``en``, ``fa`` or ``fa-IR`` is one."""

    code = Code.INVALID_LANGUAGE


def clean_language_tag(raw: str) -> str:
    """The tag to keep, or :class:`LanguageTagRefused`."""
    tag = raw.strip()
    if len(tag) > MAX_LANGUAGE_TAG or not _SHAPE.fullmatch(tag):
        raise LanguageTagRefused(max_length=MAX_LANGUAGE_TAG)
    return tag
