"""Runs the Alembic migrations programmatically, from a checkout or an installed wheel.

Importing Alembic costs a good part of ``idp serve``'s start-up, and nearly every start finds the
schema already at head; so the revision is read with one query first, and Alembic is imported only
when there is something to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from .storage.database import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "0021"
"""The newest migration's revision; ``tests/test_storage.py`` checks it against Alembic's head."""


def migrations_dir() -> Path:
    """The wheel carries the migrations inside the package; a checkout has them at the top."""
    packaged = Path(__file__).parent / "migrations"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None for a database Alembic has not touched."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def upgrade(database_url: str) -> None:
    if current_revision(database_url) == HEAD:
        return
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")
