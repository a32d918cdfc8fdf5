"""The sessions lent to requests served from memory: one per thread, cleared between requests."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from idp.caching.generations import Topic
from idp.storage import Client
from idp.storage.database import NeedsDatabase, is_in_memory_only


def test_the_threads_session_is_lent_again_with_nothing_of_the_last_request(ctx, make_client):
    client_id = make_client().client_id
    with ctx.memory_sessions.lend() as first:
        assert is_in_memory_only(first)
        first.info["left by a request"] = object()
        ctx.generations.preset(first, {topic: "1" for topic in Topic})
        first.add(Client(id="not-written", name="never"))
    with ctx.memory_sessions.lend() as second:
        assert second is first
        assert set(second.info) == set(ctx.db.kw["info"]) | {"in_memory_only"}
        assert not second.new and not list(second.identity_map)
        assert is_in_memory_only(second)
    with ctx.db() as db:
        assert db.get(Client, "not-written") is None
        assert db.get(Client, client_id) is not None


def test_work_that_reached_for_the_database_returns_its_connection(ctx):
    held = ctx.engine.pool.checkedout()
    with ctx.memory_sessions.lend() as db, pytest.raises(NeedsDatabase):
        db.execute(select(Client.id))
    assert ctx.engine.pool.checkedout() == held
    with ctx.memory_sessions.lend() as again:
        assert again is db and not again.in_transaction()
        with pytest.raises(NeedsDatabase):
            again.execute(select(Client.id))


def test_a_session_lent_already_is_not_lent_twice(ctx):
    with ctx.memory_sessions.lend() as outer, ctx.memory_sessions.lend() as inner:
        assert inner is not outer
        assert is_in_memory_only(inner) and is_in_memory_only(outer)


def test_each_thread_has_a_session_of_its_own(ctx):
    with ctx.memory_sessions.lend() as here:
        pass
    lent = []

    def lend_once() -> None:
        with ctx.memory_sessions.lend() as db:
            lent.append(db)

    worker = threading.Thread(target=lend_once)
    worker.start()
    worker.join()
    assert lent and lent[0] is not here
