"""The application context a one-shot command works in."""

from __future__ import annotations

from ..context import Context
from ..migrate import upgrade
from ..settings import Settings


def open_context(settings: Settings) -> Context:
    """Bring the schema up to date first, so that a command run before ``idp migrate`` still
    finds the tables it reads and writes."""
    upgrade(settings.database_url)
    return Context.build(settings)
