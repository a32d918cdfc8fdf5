"""Reading the change counters (:mod:`idp.storage.generations`) that every cache tags its entries with.

The counters are bumped in the database, in the changing transaction, and are exact there. Reading
them there costs a query per request, so where every process can share something cheaper, each
change is also written to it once its transaction commits, as a fresh random value (a store that
loses it cannot bring back a value a cache still holds), and read from there:

- with Redis, from Redis, in one round trip for every counter;
- on SQLite, whose processes all run beside its file, from a small file next to it that each
  maps into its memory: no query, one ``stat``.

A request served in the event loop reads them ahead (:meth:`Generations.read_ahead`), from Redis
without blocking, and hands what it read to its session (:meth:`Generations.preset`).

A change is written there before the command or request that made it answers, so whatever is asked
afterwards, of any process, sees it. A process that cannot read a value uses no cache until it can.
A change whose value could not be written there (Redis unreachable from the process that made it,
the file unwritable) is still found in the database: every serving process also reads the counters
there every :data:`SETTLE_SECONDS` (:func:`run_settling`) and tags with both, so no cache outlives
a change by more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from sqlalchemy import event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..observability.outages import Outage
from ..storage.generations import MIRROR, Generation, Topic, mirror_committed
from .shared_reads import SharedRead

if TYPE_CHECKING:
    from ..redis_clients import RedisClients

log = logging.getLogger("idp.caching")

Stamp = dict[Topic, str]
"""The counters as one read found them."""

SETTLE_SECONDS = 5.0
"""How often a serving process reads the counters from the database too."""

REDIS_RETRY_SECONDS = 1.0
"""How often a process asks a Redis that failed for the counters again. Every request reads them
first: were each to ask a Redis that does not answer, each would wait out its timeout; meanwhile
they bypass the caches, as a failed read does."""

_READ = "generations_read"


class Mirror(Protocol):
    def read(self) -> Stamp | None: ...

    async def read_async(self) -> Stamp | None: ...

    def changed(self, topic: Topic) -> None: ...


class Generations:
    def __init__(self, mirror: Mirror | None) -> None:
        self.mirror = mirror
        self._settled: Stamp | None = None
        """The counters as the database last had them (:meth:`settle`)."""
        self._settling = Outage(
            log,
            logging.WARNING,
            "change counters unreadable in the database: %s",
            "change counters readable in the database again",
        )

    @classmethod
    def for_store(cls, database_url: str, redis: RedisClients | None) -> Generations:
        if redis is not None:
            return cls(RedisMirror(redis))
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
            event.listen(maker, "after_commit", mirror_committed)

    def read(self, db: Session) -> Stamp | None:
        """The counters now, read once per transaction of ``db``; ``None``: not known, use no cache."""
        if _READ in db.info:
            found: Stamp | None = db.info[_READ]
            return found
        stamp = self._with_settled(self.mirror.read()) if self.mirror is not None else _from_database(db)
        db.info[_READ] = stamp
        return stamp

    async def read_ahead(self) -> Stamp | None:
        """The counters now, read without blocking the event loop; ``None`` where only the
        database has them, or they cannot be read."""
        return self._with_settled(await self.mirror.read_async()) if self.mirror is not None else None

    def settle(self, maker: sessionmaker[Session]) -> None:
        """Read the counters from the database, where every change is (a thread's work)."""
        try:
            with maker() as db:
                self._settled = _from_database(db)
        except SQLAlchemyError as exc:
            self._settling.failed(exc)
            return
        self._settling.succeeded()

    def _with_settled(self, stamp: Stamp | None) -> Stamp | None:
        if stamp is None or self._settled is None:
            return stamp
        settled = self._settled
        return {topic: f"{value}.{settled[topic]}" for topic, value in stamp.items()}

    def preset(self, db: Session, stamp: Stamp) -> None:
        """``db``'s transaction uses ``stamp``, read ahead, as its counters."""
        db.info[_READ] = stamp


class RedisMirror:
    def __init__(self, clients: RedisClients) -> None:
        import redis

        self.clients = clients
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._keys = {topic: f"idp:generation:{topic.value}" for topic in Topic}
        self._outage = Outage(
            log,
            logging.WARNING,
            "change counters unreadable in Redis, caches bypassed: %s",
            "change counters readable in Redis again",
        )
        self._next_ask = 0.0
        self._shared = SharedRead(self._read_async)

    def read(self) -> Stamp | None:
        if not self._asking():
            return None
        try:
            # A synchronous client's answer; redis-py types it as either kind.
            values = cast(list[bytes | None], self.clients.sync.mget(list(self._keys.values())))
            for index, (topic, value) in enumerate(zip(Topic, values, strict=True)):
                if value is None:
                    self.clients.sync.set(self._keys[topic], secrets.token_hex(8), nx=True)
                    values[index] = cast(bytes | None, self.clients.sync.get(self._keys[topic]))
        except self._errors as exc:
            self._failed(exc)
            return None
        return self._answered(values)

    async def read_async(self) -> Stamp | None:
        """As :meth:`read`, through an asyncio client of the running event loop, in a read shared
        with the requests of the loop that wait for it too (:mod:`idp.caching.shared_reads`); a
        counter not there yet is left for :meth:`read` to start (``None``)."""
        return await self._shared()

    async def _read_async(self) -> Stamp | None:
        if not self._asking():
            return None
        try:
            values = await self.clients.for_loop().mget(list(self._keys.values()))
        except self._errors as exc:
            self._failed(exc)
            return None
        return self._answered(values)

    def _asking(self) -> bool:
        """Whether to ask Redis now: while it answers, always; during an outage, one read every
        :data:`REDIS_RETRY_SECONDS` (the first to come claims it, the others do without)."""
        if not self._outage.failing:
            return True
        now = time.monotonic()
        if now < self._next_ask:
            return False
        self._next_ask = now + REDIS_RETRY_SECONDS
        return True

    def _failed(self, exc: Exception) -> None:
        """The interval starts once a read has failed, however long it waited."""
        self._next_ask = time.monotonic() + REDIS_RETRY_SECONDS
        self._outage.failed(exc)

    def _answered(self, values: Sequence[bytes | str | None]) -> Stamp | None:
        """Redis answered, so an outage is over, even where a counter is not there yet (a Redis
        back empty): every read may then ask it again, and :meth:`read` start the counters."""
        self._outage.succeeded()
        if any(value is None for value in values):
            return None
        return {
            topic: value.decode() if isinstance(value, bytes) else str(value)
            for topic, value in zip(Topic, values, strict=True)
        }

    def changed(self, topic: Topic) -> None:
        try:
            self.clients.sync.set(self._keys[topic], secrets.token_hex(8))
        except self._errors as exc:
            log.error("a change to %s could not reach Redis: %s", topic.value, type(exc).__name__)


class FileMirror:
    """A small file beside the SQLite database that every process maps into its memory: a header,
    then a slot of 8 bytes per topic, into which a change writes a fresh random value (never 0).
    A slot is read and written as one aligned 8-byte integer, so a reader sees the old value or
    the new, never a mix; reading costs one ``stat`` of the path and a look at memory the
    processes share.

    The file is made once and written in place, never replaced, so every process maps the same
    one: whoever finds it missing, short, or of another version (the former text format) writes
    it whole under an exclusive lock, which the others wait for before they map it. A file that is
    nonetheless replaced or deleted under a running process (by hand, or by an older version) is
    noticed at the next read, by its device and inode, and the one now at the path is mapped.
    A slot found 0 (a file being written whole) is no counter: caches are bypassed for that read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mapped: _MappedCounters | None = None
        self._last: tuple[tuple[int, ...], Stamp] | None = None
        """The slots of the last read and the stamp made of them, handed out again while they
        have not changed."""
        self._outage = Outage(
            log,
            logging.ERROR,
            f"change counters unreadable in {path}, caches bypassed: %s",
            f"change counters readable in {path} again",
        )

    def read(self) -> Stamp | None:
        slots = self._slots()
        if slots is None:
            return None
        values = tuple(slots)
        if 0 in values:
            return None
        last = self._last
        if last is not None and last[0] == values:
            return last[1]
        stamp = {topic: f"{value:016x}" for topic, value in zip(Topic, values, strict=True)}
        self._last = (values, stamp)
        return stamp

    async def read_async(self) -> Stamp | None:
        """A ``stat`` and a look at memory, which do not wait on anything."""
        return self.read()

    def changed(self, topic: Topic) -> None:
        slots = self._slots()
        if slots is None:
            log.error("a change to %s could not be written to %s", topic.value, self.path)
            return
        slots[list(Topic).index(topic)] = _fresh()

    def _slots(self) -> memoryview | None:
        """The slots of the file now at the path, mapped anew if it is not the one mapped."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            found = None
        except OSError as exc:
            self._outage.failed(exc)
            return None
        mapped = self._mapped
        if mapped is None or found is None or (found.st_dev, found.st_ino) != mapped.identity:
            try:
                mapped = self._mapped = _map_counters(self.path)
            except OSError as exc:
                self._outage.failed(exc)
                return None
        self._outage.succeeded()
        return mapped.slots


@dataclass(frozen=True)
class _MappedCounters:
    identity: tuple[int, int]
    """The mapped file's device and inode."""
    slots: memoryview
    """One native unsigned 64-bit integer per topic, in the order of :class:`Topic`."""


_MAGIC = b"idp-counters-2\n\x00"
_HEADER_SIZE = len(_MAGIC)
_FILE_SIZE = _HEADER_SIZE + 8 * len(Topic)


def _fresh() -> int:
    return secrets.randbits(64) or 1


def _map_counters(path: Path) -> _MappedCounters:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        status = os.fstat(descriptor)
        written = status.st_size == _FILE_SIZE and os.pread(descriptor, _HEADER_SIZE, 0) == _MAGIC
        if not written:
            os.pwrite(descriptor, _MAGIC + bytes(_FILE_SIZE - _HEADER_SIZE), 0)
            os.ftruncate(descriptor, _FILE_SIZE)
        slots = memoryview(mmap.mmap(descriptor, _FILE_SIZE))[_HEADER_SIZE:].cast("Q")
        if not written:
            for index in range(len(Topic)):
                slots[index] = _fresh()
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
    return _MappedCounters((status.st_dev, status.st_ino), slots)


async def run_settling(generations: Generations, maker: sessionmaker[Session], stop: asyncio.Event) -> None:
    """Settle the counters now and every :data:`SETTLE_SECONDS` while the process serves."""
    while not stop.is_set():
        await asyncio.to_thread(generations.settle, maker)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SETTLE_SECONDS)


def _forget_read(db: Session) -> None:
    db.info.pop(_READ, None)


def _from_database(db: Session) -> Stamp | None:
    rows: dict[str, int] = {topic: value for topic, value in db.execute(select(Generation.topic, Generation.value))}
    if any(topic.value not in rows for topic in Topic):
        return None
    return {topic: str(rows[topic.value]) for topic in Topic}
