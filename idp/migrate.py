"""Brings the database to the newest schema: runs the Alembic migrations programmatically, from a
checkout or an installed wheel, or creates an empty database at head.

Importing Alembic costs a good part of ``idp serve``'s start-up, and nearly every start finds the
schema already at head; so the revision is read with one query first, and Alembic is imported only
when there is something to migrate. An empty database is created at head from the models in one
transaction, as the migrations would leave it (``tests/test_storage.py`` compares the two): running
each migration in turn took 0.6 to 0.8 s of a first start on PostgreSQL, a third of that now.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, Connection, MetaData, PrimaryKeyConstraint, String, Table, insert, inspect, select, text

from .storage.database import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "0023"
"""The newest migration's revision; ``tests/test_storage.py`` checks it against Alembic's head."""

MIGRATION_LOCK = 7_263_948_101
"""The PostgreSQL advisory lock held while the schema is created or migrated: several replicas run
``idp serve`` (which upgrades first) at the same moment; one changes the schema, the others wait
for the lock, then find it at head."""

ALEMBIC_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)
"""Where Alembic keeps the revision a database is at, as Alembic creates it."""


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
            return _revision(connection)
    finally:
        engine.dispose()


def _revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table(ALEMBIC_VERSION.name):
        return None
    return connection.execute(select(ALEMBIC_VERSION.c.version_num)).scalar()


def upgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            revision = _revision(connection)
            connection.rollback()
            if revision == HEAD or (revision is None and _created_at_head(connection)):
                return
    finally:
        engine.dispose()
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def _created_at_head(connection: Connection) -> bool:
    """Create the schema at head if the database holds no table at all (False if it holds any):
    the models' tables, the first value of each change counter (migrations 0019 and 0021) and
    Alembic's revision, in one transaction, so that a failure leaves the database empty."""
    from .storage import Base
    from .storage.generations import Generation, Topic
    from .storage.people import LEGACY_PASSWORD

    with connection.begin():
        _lock(connection)
        if inspect(connection).get_table_names():
            return False
        Base.metadata.create_all(connection, checkfirst=False)
        # The model leaves the index's condition out (see ``User``); made as migration 0015 makes it.
        connection.execute(text("DROP INDEX ix_users_legacy_password"))
        connection.execute(text(f"CREATE INDEX ix_users_legacy_password ON users (id) WHERE {LEGACY_PASSWORD}"))
        connection.execute(insert(Generation), [{"topic": topic.value, "value": 0} for topic in Topic])
        ALEMBIC_VERSION.create(connection)
        connection.execute(ALEMBIC_VERSION.insert().values(version_num=HEAD))
    return True


def _lock(connection: Connection) -> None:
    """Hold the schema for this transaction against any other process that would change it."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
