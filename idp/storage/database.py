"""Engine and sessions: one engine per process, short sessions per unit of work."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from .people_changes import watch_people

CONNECT_TIMEOUT = 3
# libpq's TCP settings for PostgreSQL. A server that vanishes without a word (a dropped route, a
# failed-over host: no RST) leaves a pooled connection open that would otherwise hang its next
# query for the kernel's ~15 minutes of retransmissions: keepalives find an idle dead connection
# within 30 s, and the user timeout fails one with unanswered data in flight after as long.
POSTGRESQL_CONNECT_ARGS = {
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


# SQLite keeps as many connections as requests may run at once (the thread pool runs 40): with
# fewer, every request beyond them opens a connection, runs four PRAGMAs and closes it again, just
# when the server is busiest. PostgreSQL keeps fewer, as every replica's workers share the
# server's max_connections.
SQLITE_POOL = {"pool_size": 20, "max_overflow": 20}
POSTGRESQL_POOL = {"pool_size": 10, "max_overflow": 20}


def make_engine(url: str) -> Engine:
    """SQLite gets WAL and a busy timeout so that several worker processes can share one file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **SQLITE_POOL)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    connect_args: dict[str, int] = {}
    if parsed.get_backend_name() == "postgresql":
        # An unreachable server must fail a request in seconds (a clean 503), not hang it; what the
        # URL sets itself wins.
        connect_args = {key: value for key, value in POSTGRESQL_CONNECT_ARGS.items() if key not in parsed.query}
    engine = create_engine(url, connect_args=connect_args, **POSTGRESQL_POOL)
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_SECONDS = 0.5
"""A pooled connection back in the pool for longer is asked whether it still works before it is
lent again (HikariCP's default window); one returned since is lent as it is."""

_RETURNED = "idp_returned_at"


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping`` asks the server on every checkout: a round trip of its own
    for each transaction, about a tenth of the server CPU of a refresh on PostgreSQL. A
    connection in use a moment ago is all but certainly alive, and under load every connection
    is; one that died since (the server restarted within that moment) fails its statement, a
    clean 503, and the pool is renewed then. A connection idle for longer, as all are after an
    outage or a quiet night, is pinged, and one that does not answer renews the pool before the
    request uses it."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED)
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return  # just connected, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise InvalidatePoolError from error
            raise


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    maker = sessionmaker(engine, expire_on_commit=False)
    event.listen(maker, "after_begin", _refuse_if_in_memory_only)
    watch_people(maker)
    return maker


class NeedsDatabase(Exception):
    """A session marked :func:`in_memory_only` was about to use the database."""


_IN_MEMORY_ONLY = "in_memory_only"


def in_memory_only(db: Session) -> None:
    """``db`` must not reach the database: its first statement raises :class:`NeedsDatabase`
    instead (so that work run where it must not block learns it must go where it may)."""
    db.info[_IN_MEMORY_ONLY] = True


def is_in_memory_only(db: Session) -> bool:
    return bool(db.info.get(_IN_MEMORY_ONLY))


class MemorySessions:
    """One session per thread for work that must not reach the database (:func:`in_memory_only`),
    lent to one piece of work at a time and cleared after it. A request served from memory in the
    event loop still needs a session to carry what it reads, and making and closing one for each
    cost about a twentieth of such a request. Threads, not the process, each have their own: a
    process may run several event loops (a test's clients do)."""

    def __init__(self, maker: sessionmaker[Session]) -> None:
        self._maker = maker
        self._local = threading.local()

    @contextmanager
    def lend(self) -> Iterator[Session]:
        """The thread's session, marked :func:`in_memory_only`; a fresh one if it is lent already."""
        db: Session | None = getattr(self._local, "idle", None)
        if db is None:
            db = self._maker()
        self._local.idle = None
        in_memory_only(db)
        try:
            yield db
        finally:
            db.close()
            db.info.clear()
            db.info.update(self._maker.kw.get("info", {}))
            self._local.idle = db


def require_database(db: Session) -> None:
    """For work with effects beyond ``db`` (a log line) that must happen once, or that blocks
    otherwise (a round trip to Redis): raises :class:`NeedsDatabase` at once in a session marked
    :func:`in_memory_only`."""
    if db.info.get(_IN_MEMORY_ONLY):
        raise NeedsDatabase


def _refuse_if_in_memory_only(db: Session, _transaction: Any, _connection: Any) -> None:
    require_database(db)


def commit_begun(db: Session) -> None:
    """Commit the transaction ``db`` began, if it began one. A session that began none (a request
    served from memory: whatever must outlive it, an audit event, begins one) has nothing to
    commit, and :meth:`Session.commit` would begin one only to commit it, a sixth of the work of
    such a request."""
    if db.in_transaction():
        db.commit()


def changed_rows(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed. ``Session.execute`` is typed as giving a
    ``Result``, which has no ``rowcount``; for these statements it is a ``CursorResult``."""
    return cast(CursorResult[Any], result).rowcount
