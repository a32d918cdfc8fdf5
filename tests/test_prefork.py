"""``idp serve --workers N``: the workers are forks of the process that built the app, a worker that
dies is replaced, and SIGTERM, SIGINT or SIGQUIT ends them all."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import start_server


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def two_workers(pid: int) -> set[int] | None:
    found = children(pid)
    return found if len(found) == 2 else None


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, seconds: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_workers_are_forks_a_dead_one_is_replaced_and_sigterm_ends_all(base_environ, own_database_url, tmp_path):
    environ = {**base_environ, "IDP_DATABASE_URL": own_database_url, "HOME": str(tmp_path)}
    process, url = start_server(environ, tmp_path / "serve.log", "--workers", "2")
    try:
        workers = wait_for(lambda: two_workers(process.pid))
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        # A forked worker keeps its parent's command line; a spawned one would run multiprocessing's.
        assert all(Path(f"/proc/{pid}/cmdline").read_bytes() == command for pid in workers)

        killed = min(workers)
        os.kill(killed, signal.SIGKILL)
        replaced = wait_for(lambda: killed not in (found := two_workers(process.pid) or {killed}) and found)
        assert replaced & workers == workers - {killed}
        for _ in range(10):
            assert httpx.get(url + "/readyz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not [pid for pid in replaced | workers if alive(pid)]


@contextlib.contextmanager
def serving_two_workers(environ: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, set[int]]]:
    """``idp serve --workers 2`` with both workers started (a worker signalled before uvicorn took
    its signals over ends without a word); killed afterwards if it still runs."""
    process, url = start_server(environ, log, "--workers", "2")
    try:
        workers = wait_for(lambda: two_workers(process.pid))
        wait_for(lambda: log.read_text().count("Application startup complete") == 2)
        yield process, url, workers
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("stop_signal", "to_workers"),
    [(signal.SIGINT, False), (signal.SIGQUIT, False), (signal.SIGINT, True)],
    ids=["SIGINT", "SIGQUIT", "Ctrl-C"],
)
def test_sigint_or_sigquit_stops_every_worker_cleanly(
    base_environ, own_database_url, tmp_path, stop_signal, to_workers
):
    """As ``kill -INT`` or a supervisor signals the server's own process: the arbiter passes it on
    as SIGQUIT, and each worker shuts its application down and ends, well before the 20 s after
    which the arbiter would kill it. Ctrl-C in a terminal signals the workers too: each then has
    SIGINT of its own and SIGQUIT from the arbiter, and still shuts its application down."""
    environ = {**base_environ, "IDP_DATABASE_URL": own_database_url, "HOME": str(tmp_path)}
    log = tmp_path / "serve.log"
    with serving_two_workers(environ, log) as (process, url, workers):
        assert httpx.get(url + "/readyz", timeout=5).status_code == 200
        for pid in [process.pid, *workers] if to_workers else [process.pid]:
            os.kill(pid, stop_signal)
        assert process.wait(timeout=12) == 0
    assert log.read_text().count("Application shutdown complete") == 2, log.read_text()[-3000:]
    assert "SIGKILL" not in log.read_text()
    assert not [pid for pid in workers if alive(pid)]


def ctrl_c(server: int, workers: set[int]) -> None:
    """What Ctrl-C in a terminal does: SIGINT to every process of the foreground group."""
    for pid in [server, *workers]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)


def test_a_second_ctrl_c_stops_a_worker_held_by_a_stalled_request(base_environ, own_database_url, tmp_path):
    """A request whose body never comes holds its worker's graceful stop; a second Ctrl-C stops it
    at once, as it stops uvicorn alone, rather than the arbiter's kill 20 s on."""
    environ = {**base_environ, "IDP_DATABASE_URL": own_database_url, "HOME": str(tmp_path)}
    log = tmp_path / "serve.log"
    with (
        serving_two_workers(environ, log) as (process, url, workers),
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as stalled,
    ):
        stalled.sendall(
            b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\ngrant_type="
        )
        time.sleep(0.5)
        ctrl_c(process.pid, workers)
        time.sleep(1.5)
        assert process.poll() is None  # the stalled request holds its worker
        ctrl_c(process.pid, workers)
        assert process.wait(timeout=10) == 0
    assert "SIGKILL" not in log.read_text()


def test_workers_keep_their_files_in_the_temporary_directory_only(base_environ, own_database_url, tmp_path):
    """A container with a read-only root gives the server one writable directory, ``TMPDIR`` or
    /tmp: the workers' metrics files and heartbeats go there, and nothing to ``HOME``."""
    temporary, home = tmp_path / "tmp", tmp_path / "home"
    temporary.mkdir()
    home.mkdir()
    environ = {**base_environ, "IDP_DATABASE_URL": own_database_url, "HOME": str(home), "TMPDIR": str(temporary)}
    process, url = start_server(environ, tmp_path / "serve.log", "--workers", "2")
    try:
        assert httpx.get(url + "/metrics", timeout=5).status_code == 200
        # gunicorn's heartbeat files are unlinked as soon as they are open: only the metrics show.
        [metrics] = temporary.iterdir()
        assert metrics.name.startswith("idp-metrics-") and any(metrics.iterdir())
        assert list(home.iterdir()) == []
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert list(temporary.iterdir()) == []


def test_a_worker_stopped_alone_is_replaced_and_the_metrics_go_on(base_environ, own_database_url, tmp_path):
    """A worker sent SIGQUIT of its own stops as the others would, and its replacement counts into
    the metrics directory the workers share: were the stopped one to leave by exiting, it would
    unwind through the code that forked it, which removes that directory when the server stops."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    environ = {**base_environ, "IDP_DATABASE_URL": own_database_url, "HOME": str(tmp_path), "TMPDIR": str(temporary)}
    log = tmp_path / "serve.log"
    with serving_two_workers(environ, log) as (process, url, workers):
        [metrics] = temporary.iterdir()
        stopped = min(workers)
        os.kill(stopped, signal.SIGQUIT)
        wait_for(lambda: not alive(stopped) and (found := two_workers(process.pid)) and stopped not in found)
        wait_for(lambda: log.read_text().count("Application startup complete") == 3)
        for _ in range(20):
            assert httpx.get(url + "/readyz", timeout=5).status_code == 200
        assert metrics.is_dir() and list(temporary.iterdir()) == [metrics]
        answer = httpx.get(url + "/metrics", timeout=5)
        assert answer.status_code == 200
        line = r'^idp_http_requests_total\{method="GET",route="/readyz",status="200"\} (\S+)$'
        counted = re.search(line, answer.text, re.MULTILINE)
        assert counted is not None and float(counted[1]) >= 20, answer.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert list(temporary.iterdir()) == []
