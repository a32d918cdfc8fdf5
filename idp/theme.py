"""The deployment's look: its site name, and a theme directory over the shipped templates and
static files.

``IDP_THEME_DIR`` holds ``templates/`` and ``static/`` laid out as ``idp/templates/`` and
``idp/static/``; a file there replaces the shipped file of the same name, and every file it does
not have is the shipped one. So a company restyles its pages by adding the few files it changes,
and an idp upgrade still brings every page and message it left alone.

Pages and messages are rendered through the same lookup, so a theme can reword an email as well
as restyle a page. The message templates reach a transaction the way its language does
(:func:`idp.languages.speak`): :func:`dress` binds a session maker to the theme, and the outbox
asks :func:`theme_of` for it.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from jinja2 import BaseLoader, ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session, sessionmaker
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .languages import install

SHIPPED = Path(__file__).parent
DEFAULT_SITE_NAME = "idp"
_THEME = "idp.theme"


class Theme:
    """The site name and where templates and static files are looked up, built once per process."""

    def __init__(self, site_name: str = DEFAULT_SITE_NAME, directory: Path | None = None) -> None:
        """``directory``: the theme directory, or ``None`` for the shipped look alone."""
        self.site_name = site_name
        self.directory = directory

    def _own(self, kind: str) -> Path | None:
        """The theme's ``templates`` or ``static`` directory, when it has one."""
        if self.directory is None or not (self.directory / kind).is_dir():
            return None
        return self.directory / kind

    @cached_property
    def loader(self) -> BaseLoader:
        shipped = FileSystemLoader(SHIPPED / "templates")
        own = self._own("templates")
        return shipped if own is None else ChoiceLoader([FileSystemLoader(own), shipped])

    def _named(self, environment: Environment) -> Environment:
        environment.globals["site_name"] = self.site_name
        return install(environment)

    @cached_property
    def pages(self) -> Jinja2Templates:
        """The hosted pages' templates, HTML-escaped."""
        return Jinja2Templates(env=self._named(Environment(loader=self.loader, autoescape=True)))

    @cached_property
    def messages(self) -> Environment:
        """The email and SMS templates: ``.html`` escaped, ``.txt`` as written; a missing value is
        an error rather than a blank in someone's mail."""
        return self._named(
            Environment(
                loader=self.loader,
                autoescape=select_autoescape(["html"], default_for_string=False, default=False),
                undefined=StrictUndefined,
            )
        )

    def static_files(self) -> StaticFiles:
        """``/static``: the theme's file when it has one, else the shipped one."""
        return StaticFiles(directory=self._own("static"), packages=[("idp", "static")])


def dress(maker: sessionmaker[Session], theme: Theme) -> None:
    """The messages queued in every session ``maker`` makes are rendered with ``theme``."""
    maker.configure(info={**maker.kw.get("info", {}), _THEME: theme})


def theme_of(db: Session) -> Theme:
    """The theme ``db``'s messages are rendered with: the shipped look for a session made
    without :func:`dress`."""
    found = db.info.get(_THEME)
    return found if isinstance(found, Theme) else Theme()
