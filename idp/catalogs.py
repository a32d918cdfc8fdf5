"""Where the gettext catalogs are, which languages have one, and what each is called.

Kept apart from :mod:`idp.languages`, which loads and applies them with Jinja, so that reading the
settings (``IDP_DEFAULT_LOCALE`` names a catalog) and marking a message imports neither: ``idp
serve`` starts without them until the application is built.
"""

from __future__ import annotations

from pathlib import Path

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
SOURCE = "en"
"""The language the messages are written in: its catalog translates nothing."""
OWN_NAMES = {"en": "English", "fa": "فارسی"}
"""Each language's name for itself, as the switcher shows it: CLDR's, as Babel gives it. Kept here
rather than asked of Babel at start, which loads some 6 MB of locale data a process for these few
words; ``tests/test_languages.py`` checks them against Babel's."""
RIGHT_TO_LEFT = frozenset({"fa"})
"""The languages written right to left (CLDR's character order), checked against Babel's too."""


def N_(message: str) -> str:  # noqa: N802 - the name gettext's tools look for
    """Mark ``message`` for the catalogs; it is translated where it is shown."""
    return message


def available() -> tuple[str, ...]:
    """The tags of the languages that have a catalog, the source language first."""
    tags = sorted(path.parent.parent.name for path in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return tuple(sorted(tags, key=lambda tag: tag != SOURCE))
