"""The benchmark runs end to end and prints its tables; speed is the benchmark's business, not the suite's.

One very short run: it starts ``idp serve --workers 2`` itself on a database of its own (SQLite, or
PostgreSQL with Redis in CI's second pass), so every
flow it drives (sign-in, code exchange, refresh rotation, introspection, userinfo) must work
without a single error for the tables to be worth reading. wrk, which drives the stateless
scenarios, is checked against a small server of the test's own: that it sends the scenario's
request byte for byte and counts every answer but a 2xx as an error.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from .services import own_database, suite_redis_url

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"
FAKE_PEER = Path(__file__).resolve().parent / "fake_peer"
SCENARIOS = (
    "discovery",
    "jwks",
    "client_credentials",
    "refresh_token",
    "introspection",
    "userinfo",
    "complete password sign-ins",
)
TARGETS = (
    "client_credentials per second / RSA-2048",
    "password sign-in's server CPU / one argon2 hash",
    "ready on a migrated database",
    "RSS per worker, idle",
)
ODD_HEADER = 'Basic "quoted" back\\slash 100% {braces}'
ODD_BODY = 'token=a%2Bb&note="it\'s"\\n\u00e9\nnext line'


needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")


class _Answers(BaseHTTPRequestHandler):
    """200 only for the exact odd request; a redirect and a wrong body for the other paths."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        exact = self.path == "/exact" and self.headers["Authorization"] == ODD_HEADER and body == ODD_BODY
        self._answer(200 if exact else 400, b'{"active": true}')

    def do_GET(self) -> None:
        if self.path == "/moved":
            self._answer(302, b"", {"Location": "/"})
        else:
            self._answer(200, b'{"active": false}')

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    """The benchmark's modules, imported the way ``bench/run.py`` imports them."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    return {name: importlib.import_module(name) for name in ("stateless", "wrk")}


@needs_wrk
def test_wrk_sends_the_scenarios_request_byte_for_byte(
    bench: dict[str, ModuleType], answers: str, tmp_path: Path
) -> None:
    request = bench["stateless"].Request("POST", "/exact", {"Authorization": ODD_HEADER}, ODD_BODY)
    result = bench["wrk"].run(answers, request, 1, 2, tmp_path)
    assert result["count"] > 0 and result["errors"] == 0, result
    assert result["p50"] is not None and result["cpu_seconds"] >= 0 and result["elapsed"] > 0.5


@needs_wrk
def test_wrk_counts_every_answer_but_a_2xx_as_an_error(
    bench: dict[str, ModuleType], answers: str, tmp_path: Path
) -> None:
    result = bench["wrk"].run(answers, bench["stateless"].Request("GET", "/moved"), 1, 2, tmp_path)
    assert result["count"] == 0 and result["errors"] > 0, result
    assert result["first_error"].startswith("answered 302"), result


@needs_wrk
def test_a_200_with_the_wrong_body_stops_the_benchmark(bench: dict[str, ModuleType], answers: str) -> None:
    stateless = bench["stateless"]
    scenario = stateless.Stateless(
        "introspection", stateless.Request("GET", "/inactive"), "an active token", lambda a: a.get("active") is True
    )
    with pytest.raises(SystemExit, match=r"introspection: GET /inactive answered 200 .*active.*not an active token"):
        stateless.confirm(answers, scenario)


def test_without_wrk_the_benchmark_stops_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "1"],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "wrk is missing: bench/run.py drives the stateless scenarios with it; install wrk (apt-get)"
    ]


def _rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@needs_wrk
@pytest.mark.timeout(600)
def test_a_short_run_prints_every_scenario_and_target(tmp_path: Path) -> None:
    """On the suite's back end: in CI's second pass, a PostgreSQL database of its own and the Redis."""
    with own_database(tmp_path) as database_url:
        back_end = ["--database-url", database_url] if database_url.startswith("postgresql") else []
        redis_url = suite_redis_url()
        if redis_url:
            back_end += ["--redis-url", redis_url]
        peer = ["--peer", str(FAKE_PEER)] if shutil.which("node") and shutil.which("npm") else []
        result = subprocess.run(
            [sys.executable, str(BENCH), "--seconds", "1", "--concurrency", "2", *back_end, *peer],
            capture_output=True,
            text=True,
            timeout=580,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(result.stdout)
    assert rows["database"][0] == ("PostgreSQL" if back_end[:1] == ["--database-url"] else "SQLite (a fresh file)")
    assert rows["redis"][0] == ("yes" if "--redis-url" in back_end else "no (in-process store)")
    for scenario in SCENARIOS:
        per_second, _p50, _p99, done, errors, *_ = rows[scenario]
        assert int(done) > 0 and errors == "0", (scenario, result.stdout)
    for target in TARGETS:
        (row,) = [cells for name, cells in rows.items() if target in name]
        assert row[-1] in ("met", "**not met**"), row
    assert re.search(r"RSA-2048 signatures, 1 core \| [\d,.]+ \|", result.stdout)
    assert re.search(r"argon2 hashes, 1 core \| [\d,.]+ \|", result.stdout)
    assert "load average at end" in result.stdout
    if peer:
        for scenario in ("discovery", "jwks", "client_credentials", "introspection"):
            row = rows[f"{scenario}, beside the peer"]
            _peer_rate, _idp_rate, ratio, *_, errors, goal, verdict = row
            assert float(ratio) > 0 and errors == "0" and goal.startswith(">= "), row
            assert verdict in ("met", "**not met**")
        assert re.search(r"the machine, same run: [\d,]+ RSA-2048 signatures a second on 1 core", result.stdout)
