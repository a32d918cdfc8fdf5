"""Requests of one event loop share a read of the change counters, but never one begun before they
arrived (:mod:`idp.caching.shared_reads`): a revocation committed before a request was sent must be
seen by it, whichever read it shares."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from idp.caching.generations import Generations
from idp.caching.shared_reads import SharedRead
from idp.redis_clients import RedisClients
from idp.storage.generations import Topic

from .event_loops import run_apart
from .services import RedisServer


class HeldStore:
    """A value read through a read that waits until the test lets it finish, counting reads."""

    def __init__(self) -> None:
        self.value = "before"
        self.reads = 0
        self.release = asyncio.Event()
        self.began = asyncio.Event()

    async def read(self) -> str:
        self.reads += 1
        seen = self.value
        self.began.set()
        await self.release.wait()
        return seen


def test_a_request_that_arrives_while_a_read_is_on_its_way_waits_for_the_next():
    run_apart(_a_request_that_arrives_while_a_read_is_on_its_way_waits_for_the_next())


async def _a_request_that_arrives_while_a_read_is_on_its_way_waits_for_the_next():
    store = HeldStore()
    shared = SharedRead(store.read)
    first = asyncio.create_task(shared())
    await store.began.wait()
    store.value = "after"  # a change committed while the first read is on its way
    second = asyncio.create_task(shared())
    third = asyncio.create_task(shared())
    await asyncio.sleep(0)
    store.release.set()
    assert await first == "before"
    assert await second == "after", "a read begun before the request arrived was shared with it"
    assert await third == "after"
    assert store.reads == 2, "the two that came during the first read share the second"


def test_requests_that_arrive_together_share_one_read():
    run_apart(_requests_that_arrive_together_share_one_read())


async def _requests_that_arrive_together_share_one_read():
    store = HeldStore()
    store.release.set()
    shared = SharedRead(store.read)
    assert await asyncio.gather(*(shared() for _ in range(20))) == ["before"] * 20
    assert store.reads == 1
    assert await shared() == "before"
    assert store.reads == 2, "a later request reads again"


def test_a_cancelled_request_does_not_cancel_the_read_the_others_wait_for():
    run_apart(_a_cancelled_request_does_not_cancel_the_read_the_others_wait_for())


async def _a_cancelled_request_does_not_cancel_the_read_the_others_wait_for():
    store = HeldStore()
    shared = SharedRead(store.read)
    leaving = asyncio.create_task(shared())
    staying = asyncio.create_task(shared())
    await store.began.wait()
    leaving.cancel()
    store.release.set()
    assert await staying == "before"
    with pytest.raises(asyncio.CancelledError):
        await leaving


def test_a_failed_read_fails_those_who_shared_it_and_the_next_reads_afresh():
    run_apart(_a_failed_read_fails_those_who_shared_it_and_the_next_reads_afresh())


async def _a_failed_read_fails_those_who_shared_it_and_the_next_reads_afresh():
    reads = 0

    async def failing_once() -> int:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise ConnectionError("store down")
        return reads

    shared = SharedRead(failing_once)
    results = await asyncio.gather(shared(), shared(), return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionError, ConnectionError]
    assert await shared() == 2


def mget_calls(server: RedisServer) -> int:
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        stats = client.info("commandstats")
        return int(stats.get("cmdstat_mget", {}).get("calls", 0))
    finally:
        client.close()


def test_requests_served_together_ask_redis_for_the_counters_once_and_see_a_change_after(
    tmp_path: Path,
):
    run_apart(_requests_served_together_ask_redis_for_the_counters_once_and_see_a_change_after(tmp_path))


async def _requests_served_together_ask_redis_for_the_counters_once_and_see_a_change_after(
    tmp_path: Path,
):
    server = RedisServer(tmp_path)
    server.start()
    clients = RedisClients(server.url)
    generations = Generations.for_store(f"sqlite:///{tmp_path / 'idp.db'}", clients)
    mirror = generations.mirror
    assert mirror is not None
    try:
        assert mirror.read() is not None  # starts the counters
        before = mget_calls(server)
        stamps = await asyncio.gather(*(generations.read_ahead() for _ in range(20)))
        assert mget_calls(server) - before == 1
        assert stamps[0] is not None and all(stamp == stamps[0] for stamp in stamps)
        mirror.changed(Topic.REVOCATIONS)
        after = await generations.read_ahead()
        assert after is not None and after[Topic.REVOCATIONS] != stamps[0][Topic.REVOCATIONS]
    finally:
        await clients.for_loop().aclose()
        clients.close()
        server.kill()
