"""The languages idp speaks: one gettext catalog each, for the hosted pages, emails and text messages.

A language is a catalog, ``idp/locale/<tag>/LC_MESSAGES/messages.po``, and its compiled
``messages.mo`` beside it (``pybabel compile``; the README says how to add one). A process reads
only the ``.mo``, with the standard library's :mod:`gettext`: compiling the ``.po`` at every start
imported Babel's catalog machinery, and naming the language loaded its locale data, some 7 MB a
process in all. ``tests/test_languages.py`` fails while a ``.mo`` is not what its ``.po`` compiles to.

Python code marks what a person reads with :func:`~.catalogs.N_`, which the extractor finds, and translates
it where it is shown, into the language of whoever reads it (:mod:`idp.web.locale` chooses it for
a request). Templates use Jinja's i18n extension, bound by :func:`install` to the ``language``
of the page or message being rendered.

The messages a transaction queues are written in the recipient's saved language, else in the
language of the request that caused them: :func:`speak` binds a session maker to the catalogs,
and a request names its own language in its transaction (:func:`speak_for`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from gettext import GNUTranslations
from typing import Any

from jinja2 import Environment, pass_context
from jinja2.runtime import Context
from sqlalchemy.orm import Session, sessionmaker

from .catalogs import DOMAIN, LOCALE_DIR, OWN_NAMES, RIGHT_TO_LEFT, SOURCE, available

_SPEAKER = "idp.speaker"


@dataclass(frozen=True)
class Language:
    """One catalog, with what a page needs to show text in it."""

    tag: str
    name: str
    """The language's own name for itself (``فارسی``), as the switcher shows it."""
    direction: str
    """``rtl`` or ``ltr``, for ``<html dir>``."""
    translations: GNUTranslations

    def text(self, message: str, **data: object) -> str:
        """``message`` in this language, its ``{placeholders}`` filled in from ``data``."""
        translated = self.translations.gettext(message)
        return translated.format(**data) if data else translated


@dataclass(frozen=True)
class Languages:
    """Every catalog, loaded once per process, and the language used when nothing chooses one."""

    by_tag: Mapping[str, Language]
    default: Language

    @classmethod
    def load(cls, default: str = SOURCE) -> Languages:
        by_tag = {tag: _load(tag) for tag in available()}
        return cls(by_tag, by_tag[default])

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.by_tag)

    def get(self, tag: str | None) -> Language | None:
        return self.by_tag.get(tag) if tag else None

    def nearest(self, tag: str | None) -> Language | None:
        """The language that serves a person whose ``locale`` is ``tag``, any BCP 47 tag."""
        return self.negotiate([tag]) if tag else None

    def negotiate(self, preferred: Iterable[str]) -> Language | None:
        """The first of ``preferred`` (BCP 47 tags, best first) that has a catalog, matched
        without regard to case, else by its language subtag: ``fa-IR`` is served by ``fa``."""
        for tag in preferred:
            tag = tag.lower()
            found = self.by_tag.get(tag) or self.by_tag.get(tag.partition("-")[0])
            if found is not None:
                return found
        return None


def _load(tag: str) -> Language:
    with (LOCALE_DIR / tag / "LC_MESSAGES" / f"{DOMAIN}.mo").open("rb") as compiled:
        translations = GNUTranslations(compiled)
    return Language(
        tag=tag,
        name=OWN_NAMES.get(tag, tag),
        direction="rtl" if tag in RIGHT_TO_LEFT else "ltr",
        translations=translations,
    )


@pass_context
def _gettext(context: Context, message: str) -> str:
    language: Language = context["language"]
    return language.translations.gettext(message)


@pass_context
def _ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    language: Language = context["language"]
    return language.translations.ngettext(singular, plural, n)


def install(environment: Environment) -> Environment:
    """Give ``environment`` Jinja's i18n extension, translating into the ``language`` that every
    render passes (a :class:`Language`). Whitespace in ``{% trans %}`` blocks is collapsed, as the
    extractor collapses it (``trimmed`` in ``babel.cfg``)."""
    environment.add_extension("jinja2.ext.i18n")
    environment.policies["ext.i18n.trimmed"] = True
    environment.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
    return environment


@dataclass(frozen=True)
class Speaker:
    """Whom the messages queued in a transaction are written for."""

    languages: Languages
    of_request: Callable[[], Language] | None = None
    """The language of the request the transaction serves, if it serves one."""

    def language_for(self, saved: str | None) -> Language:
        """The language nearest the recipient's saved one, else the request's, else the default."""
        chosen = self.languages.nearest(saved)
        if chosen is not None:
            return chosen
        return self.of_request() if self.of_request is not None else self.languages.default

    def request_tag(self) -> str | None:
        """The tag of the request's language, for a person made while serving it to keep as their
        own; ``None`` outside a request (the CLI)."""
        return self.of_request().tag if self.of_request is not None else None


def speak(maker: sessionmaker[Session], languages: Languages) -> None:
    """Every session ``maker`` makes writes its messages with ``languages``."""
    info: dict[Any, Any] = {**maker.kw.get("info", {}), _SPEAKER: Speaker(languages)}
    maker.configure(info=info)


def speak_for(db: Session, of_request: Callable[[], Language]) -> None:
    """The messages queued in ``db`` are for the person making this request, unless they have a
    language of their own."""
    db.info[_SPEAKER] = Speaker(speaker(db).languages, of_request)


def speaker(db: Session) -> Speaker:
    found = db.info.get(_SPEAKER)
    if not isinstance(found, Speaker):
        return Speaker(Languages.load())
    return found
