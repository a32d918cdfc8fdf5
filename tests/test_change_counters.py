"""When the change counters the caches are tagged with move (:mod:`idp.storage.generations`).

Across processes, ``tests/test_caches_across_instances.py`` shows that a change counts everywhere at
once; this shows what moves the people's counter and what must not, and that a counters file an
older version left beside a SQLite database is started afresh rather than read wrongly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from idp.caching import generations as generations_module
from idp.caching.generations import FileMirror, Generations
from idp.redis_clients import RedisClients
from idp.storage import User, UserGroup, make_sessionmaker
from idp.storage.generations import Generation, Topic, bump

from .event_loops import run_apart
from .flows import assert_generic_failure, post_login
from .services import RedisServer


def people_counter(ctx) -> int:  # type: ignore[no-untyped-def]
    with ctx.db() as db:
        return db.scalar(select(Generation.value).where(Generation.topic == Topic.PEOPLE.value))


def test_a_changed_claim_moves_the_counter_once_per_transaction(ctx, make_user):
    person = make_user()
    before = people_counter(ctx)
    with ctx.db.begin() as db:
        user = db.get_one(User, person.id)
        user.name = "Changed"
        db.flush()
        user.given_name = "Again"
    assert people_counter(ctx) == before + 1


def test_joining_a_group_and_being_deleted_move_it(ctx, make_user):
    person = make_user()
    before = people_counter(ctx)
    with ctx.db.begin() as db:
        db.add(UserGroup(user_id=person.id, name="staff"))
    assert people_counter(ctx) == before + 1
    with ctx.db.begin() as db:
        db.delete(db.get_one(User, person.id))
    assert people_counter(ctx) == before + 2


def test_signing_in_and_failing_to_move_nothing_an_app_is_told(ctx, make_user, http):
    """A sign-in writes when the person last proved who they are, a wrong password counts a
    failure: neither is a claim, so neither empties every process's people."""
    person = make_user()
    before = people_counter(ctx)
    assert_generic_failure(post_login(http, person.email, "not the password"))
    right = post_login(http, person.email, person.password)
    assert right.status_code == 303, right.text
    assert people_counter(ctx) == before


def test_a_counters_file_of_other_topics_is_started_afresh(tmp_path):
    path = tmp_path / "idp.db-generations"
    path.write_text("older\nversion")
    read = FileMirror(path).read()
    assert read is not None and set(read) == set(Topic)
    assert "older" not in read.values()
    assert FileMirror(path).read() == read


@pytest.mark.parametrize("found", [b"", b"short", b"x" * 4096])
def test_a_counters_file_cut_short_or_grown_is_written_whole_before_it_is_mapped(tmp_path, found):
    """A file shorter than the map would end it at a bus error on the first read past its end."""
    path = tmp_path / "idp.db-generations"
    path.write_bytes(found)
    mirror = FileMirror(path)
    read = mirror.read()
    assert read is not None and set(read) == set(Topic)
    mirror.changed(Topic.PEOPLE)
    assert mirror.read() != read


def test_a_change_in_another_process_is_seen_at_the_next_read(tmp_path):
    """Every process maps the one file: what one writes, the next read of any other returns,
    without the file being opened again."""
    path = tmp_path / "idp.db-generations"
    here = FileMirror(path)
    before = here.read()
    assert before is not None
    program = (
        "import sys; from pathlib import Path; from idp.caching.generations import FileMirror; "
        "from idp.storage.generations import Topic; FileMirror(Path(sys.argv[1])).changed(Topic.REVOCATIONS)"
    )
    subprocess.run([sys.executable, "-c", program, str(path)], check=True, timeout=60)  # noqa: S603
    after = here.read()
    assert after is not None
    assert after[Topic.REVOCATIONS] != before[Topic.REVOCATIONS]
    assert after[Topic.CLIENTS] == before[Topic.CLIENTS] and after[Topic.PEOPLE] == before[Topic.PEOPLE]


def test_counters_that_cannot_be_mapped_are_no_counters_and_asked_for_again(tmp_path, caplog):
    """No counters: the caches are bypassed (``None``), the file is tried again at every read, and
    the log says so when that begins and when it ends, not at every request."""
    caplog.set_level(logging.INFO, logger="idp.caching")
    mirror = FileMirror(tmp_path / "missing" / "idp.db-generations")
    for _ in range(3):
        assert mirror.read() is None
    (tmp_path / "missing").mkdir()
    assert mirror.read() is not None
    lines = [line for _, line in outage_lines(caplog)]
    assert len(lines) == 2 and "unreadable" in lines[0] and "readable" in lines[1]


def test_a_slot_found_zero_is_no_counter(tmp_path):
    """A file being written whole holds zeros for a moment: a read then finds no counters rather
    than a value that every such moment would share (and a cache tagged with it could match)."""
    path = tmp_path / "idp.db-generations"
    mirror = FileMirror(path)
    assert mirror.read() is not None
    with path.open("r+b") as file:
        file.seek(path.stat().st_size - 8)
        file.write(bytes(8))
    assert mirror.read() is None
    mirror.changed(list(Topic)[-1])
    assert mirror.read() is not None


def test_a_change_being_written_by_another_process_is_never_read_half_done(tmp_path):
    """Each slot is one aligned 8-byte store and load: however often another process writes, a
    read gets whole values (a write done byte by byte would show zeros in between)."""
    path = tmp_path / "idp.db-generations"
    mirror = FileMirror(path)
    assert mirror.read() is not None
    program = (
        "import sys, time; from pathlib import Path; from idp.caching.generations import FileMirror; "
        "from idp.storage.generations import Topic; mirror = FileMirror(Path(sys.argv[1])); "
        "end = time.monotonic() + 2\nwhile time.monotonic() < end: mirror.changed(Topic.CLIENTS)"
    )
    writer = subprocess.Popen([sys.executable, "-c", program, str(path)])  # noqa: S603
    try:
        seen = set()
        while writer.poll() is None:
            read = mirror.read()
            assert read is not None, "a read found a slot half written"
            seen.add(read[Topic.CLIENTS])
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert len(seen) > 10, "the reads did not overlap the writes"


def test_a_counters_file_deleted_under_a_process_is_followed_to_the_new_one(tmp_path):
    """A process keeps no mapping of a file no longer at the path: a change another process
    writes into the file now there is seen at the next read."""
    path = tmp_path / "idp.db-generations"
    server = FileMirror(path)
    before = server.read()
    assert before is not None
    path.unlink()
    FileMirror(path).changed(Topic.REVOCATIONS)
    after = server.read()
    assert after is not None and after[Topic.REVOCATIONS] != before[Topic.REVOCATIONS]
    assert FileMirror(path).read() == after


def test_a_change_after_a_savepoint_rolled_back_still_moves_it(ctx, make_user):
    """A change inside a savepoint that is rolled back takes its bump with it: a later change in
    the same transaction must bump again."""
    person = make_user()
    before = people_counter(ctx)
    with ctx.db.begin() as db:
        user = db.get_one(User, person.id)
        savepoint = db.begin_nested()
        user.name = "Inside"
        db.flush()
        savepoint.rollback()
        user.given_name = "After"
    assert people_counter(ctx) == before + 1
    with ctx.db() as db:
        assert db.get_one(User, person.id).given_name == "After"


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "idp.caching"]


def test_counters_unreadable_in_redis_are_logged_when_that_begins_and_when_it_ends(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(generations_module, "REDIS_RETRY_SECONDS", 0.0)  # every read asks Redis
    caplog.set_level(logging.INFO, logger="idp.caching")
    server = RedisServer(tmp_path)
    server.start()
    clients = RedisClients(server.url)
    generations = Generations.for_store(f"sqlite:///{tmp_path / 'idp.db'}", clients)
    mirror = generations.mirror
    assert mirror is not None
    try:
        assert mirror.read() is not None
        server.kill()
        assert mirror.read() is None
        assert run_apart(generations.read_ahead()) is None
        assert mirror.read() is None
        server.start()
        assert mirror.read() is not None
        assert run_apart(generations.read_ahead()) is not None
    finally:
        clients.close()
        server.kill()
    assert outage_lines(caplog) == [
        (logging.WARNING, "change counters unreadable in Redis, caches bypassed: ConnectionError"),
        (logging.INFO, "change counters readable in Redis again"),
    ]


def test_counters_unreadable_in_the_database_are_logged_when_that_begins_and_when_it_ends(ctx, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="idp.caching")
    unreachable = create_engine(f"sqlite:///{tmp_path / 'missing' / 'idp.db'}")
    generations = Generations(None)
    generations.settle(sessionmaker(unreachable))
    generations.settle(sessionmaker(unreachable))
    generations.settle(ctx.db)
    generations.settle(ctx.db)
    unreachable.dispose()
    assert outage_lines(caplog) == [
        (logging.WARNING, "change counters unreadable in the database: OperationalError"),
        (logging.INFO, "change counters readable in the database again"),
    ]


def test_every_commit_of_a_session_reaches_the_mirror(ctx, tmp_path: Path):
    """The command line commits more than once in one session: a change committed after the
    first must reach the other processes too, not wait for the database settle."""
    mirror = FileMirror(tmp_path / "idp.db-generations")
    maker = make_sessionmaker(ctx.engine)
    Generations(mirror).attach(maker)
    with maker() as db:
        bump(db, Topic.CLIENTS)
        db.commit()
        after_first = mirror.read()
        bump(db, Topic.CLIENTS)
        db.commit()
        after_second = mirror.read()
        db.commit()
        assert mirror.read() == after_second, "a commit that bumped nothing mirrors nothing"
    assert after_first is not None and after_second is not None
    assert after_second[Topic.CLIENTS] != after_first[Topic.CLIENTS]


class HangingUp:
    """A server that accepts every connection and closes it at once, counting them: a Redis that
    fails every command, where each attempt to ask it is one connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()


@pytest.fixture
def hanging_up() -> Iterator[HangingUp]:
    server = HangingUp()
    yield server
    server.listener.close()


def test_during_an_outage_of_redis_the_counters_are_asked_of_it_once_an_interval(
    hanging_up: HangingUp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Every request reads the counters first: were each to ask a Redis that does not answer,
    each would wait out the timeout. Meanwhile they bypass the caches, as when the read fails."""
    monkeypatch.setattr(generations_module, "REDIS_RETRY_SECONDS", 0.3)
    clients = RedisClients(hanging_up.url)
    generations = Generations.for_store(f"sqlite:///{tmp_path / 'idp.db'}", clients)
    mirror = generations.mirror
    assert mirror is not None

    async def read_ahead_together(count: int) -> list[object]:
        return list(await asyncio.gather(*(generations.read_ahead() for _ in range(count))))

    try:
        assert run_apart(generations.read_ahead()) is None
        assert hanging_up.connections == 1
        assert run_apart(read_ahead_together(5)) == [None] * 5
        assert mirror.read() is None
        assert hanging_up.connections == 1, "asked again within the interval"
        time.sleep(generations_module.REDIS_RETRY_SECONDS)
        assert run_apart(read_ahead_together(5)) == [None] * 5
        assert mirror.read() is None
        assert hanging_up.connections == 2, "asked again once the interval is over, by one request"
    finally:
        clients.close()


def test_a_redis_back_empty_after_an_outage_has_its_counters_started_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A read ahead that finds Redis answering but without counters leaves them to the read of
    the request's thread, which must not be held back as if Redis still failed."""
    monkeypatch.setattr(generations_module, "REDIS_RETRY_SECONDS", 0.3)
    server = RedisServer(tmp_path)
    server.start()
    clients = RedisClients(server.url)
    generations = Generations.for_store(f"sqlite:///{tmp_path / 'idp.db'}", clients)
    mirror = generations.mirror
    assert mirror is not None
    try:
        assert mirror.read() is not None
        server.kill()
        assert mirror.read() is None
        server.start()
        time.sleep(generations_module.REDIS_RETRY_SECONDS)
        assert run_apart(generations.read_ahead()) is None, "no counters in a Redis back empty"
        assert mirror.read() is not None
        assert run_apart(generations.read_ahead()) is not None
    finally:
        clients.close()
        server.kill()
