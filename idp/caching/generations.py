"""Reading the change counters (:mod:`idp.storage.generations`) that every cache tags its entries with.

The counters are bumped in the database, in the changing transaction, and are exact there. Reading
them there costs a query per request, so where every process can share something cheaper, each
change is also written to it once its transaction commits, as a fresh random value (a store that
loses it cannot bring back a value a cache still holds), and read from there:

- with Redis, from Redis, in one round trip for every counter;
- on SQLite, whose processes all run beside its file, from a small file next to it: a read of a
  few bytes, no query, no round trip.

A change is written there before the command or request that made it answers, so whatever is asked
afterwards, of any process, sees it. A process that cannot read a value uses no cache until it can.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import event, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ..storage.generations import MIRROR, Generation, Topic

if TYPE_CHECKING:
    import redis

log = logging.getLogger("idp.caching")

Stamp = dict[Topic, str]
"""The counters as one read found them."""

_READ = "generations_read"


class Mirror(Protocol):
    def read(self) -> Stamp | None: ...

    def changed(self, topic: Topic) -> None: ...


class Generations:
    def __init__(self, mirror: Mirror | None) -> None:
        self.mirror = mirror

    @classmethod
    def for_store(cls, database_url: str, redis_client: redis.Redis | None) -> Generations:
        if redis_client is not None:
            return cls(RedisMirror(redis_client))
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return cls(FileMirror(Path(f"{url.database}-generations")))
        return cls(None)

    def attach(self, maker: sessionmaker[Session]) -> None:
        """Every session ``maker`` makes reads the counters afresh in each transaction, and writes
        its changes to the mirror too, once committed."""
        event.listen(maker, "after_commit", _forget_read)
        event.listen(maker, "after_rollback", _forget_read)
        if self.mirror is not None:
            maker.configure(info={**maker.kw.get("info", {}), MIRROR: self.mirror.changed})

    def read(self, db: Session) -> Stamp | None:
        """The counters now, read once per transaction of ``db``; ``None``: not known, use no cache."""
        if _READ in db.info:
            found: Stamp | None = db.info[_READ]
            return found
        stamp = self.mirror.read() if self.mirror is not None else _from_database(db)
        db.info[_READ] = stamp
        return stamp


class RedisMirror:
    def __init__(self, redis_client: redis.Redis) -> None:
        import redis as redis_library

        self.redis = redis_client
        self._errors: tuple[type[Exception], ...] = (redis_library.RedisError,)
        self._keys = {topic: f"idp:generation:{topic.value}" for topic in Topic}
        self._failing = False
        """Whether the last read failed: an outage is logged when it begins and when it ends,
        not on every request."""

    def read(self) -> Stamp | None:
        try:
            values = self.redis.mget(list(self._keys.values()))
            stamp: Stamp = {}
            for topic, value in zip(Topic, values, strict=True):
                if value is None:
                    self.redis.set(self._keys[topic], secrets.token_hex(8), nx=True)
                    value = self.redis.get(self._keys[topic])
                stamp[topic] = value.decode() if isinstance(value, bytes) else str(value)
        except self._errors as exc:
            if not self._failing:
                log.warning("change counters unreadable in Redis, caches bypassed: %s", type(exc).__name__)
            self._failing = True
            return None
        if self._failing:
            log.info("change counters readable in Redis again")
            self._failing = False
        return stamp

    def changed(self, topic: Topic) -> None:
        try:
            self.redis.set(self._keys[topic], secrets.token_hex(8))
        except self._errors as exc:
            log.error("a change to %s could not reach Redis: %s", topic.value, type(exc).__name__)


class FileMirror:
    """One line per topic in a file beside the SQLite database; a change replaces the file whole
    (written aside, then renamed), so a reader sees the old file or the new, never half of one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Stamp | None:
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self.changed(None)
            return self.read() if self.path.exists() else None
        except OSError:
            return None
        try:
            lines = os.read(descriptor, 4096).decode("ascii", "replace").split()
        except OSError:
            return None
        finally:
            os.close(descriptor)
        if len(lines) != len(Topic):
            return None
        return dict(zip(Topic, lines, strict=True))

    def changed(self, topic: Topic | None) -> None:
        """Every topic gets a new value: simpler than rewriting one line, and as correct."""
        aside = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}")
        try:
            aside.write_text("\n".join(secrets.token_hex(8) for _ in Topic))
            os.replace(aside, self.path)
        except OSError as exc:
            log.error("a change could not be written to %s: %s", self.path, exc)
            aside.unlink(missing_ok=True)


def _forget_read(db: Session) -> None:
    db.info.pop(_READ, None)


def _from_database(db: Session) -> Stamp | None:
    rows: dict[str, int] = {topic: value for topic, value in db.execute(select(Generation.topic, Generation.value))}
    if any(topic.value not in rows for topic in Topic):
        return None
    return {topic: str(rows[topic.value]) for topic in Topic}
