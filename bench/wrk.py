"""wrk replaying one stateless request: a load generator in C that leaves the cores to the server it measures.

wrk's own summary counts only 4xx and 5xx answers as errors, so the script counts every answer
but a 2xx itself and its ``done`` hook writes one line of JSON with the counts, the duration and
the latency percentiles from wrk's own histogram, exact where the printed summary is rounded for reading.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stateless import Request

_RESULT = "bench-result "
_FIRST = "bench-first-unexpected "

_COUNTING = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  unexpected = 0
  first = ""
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    if unexpected == 0 then
      first = status .. " " .. string.sub(body, 1, 200)
    end
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local unexpected, first = 0, ""
  for _, thread in ipairs(threads) do
    unexpected = unexpected + thread:get("unexpected")
    if first == "" then
      first = thread:get("first")
    end
  end
  local errors = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "unexpected": %d, '
      .. '"connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    RESULT, summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), unexpected,
    errors.connect, errors.read, errors.write, errors.timeout))
  io.write(FIRST, (string.gsub(first, "%s+", " ")), "\n")
end
"""


def installed() -> str:
    """wrk's path; without wrk the benchmark stops with one line, not a quiet fall back to a slower generator."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is missing: bench/run.py drives the stateless scenarios with it; install wrk (apt-get)")
    return path


def lua_string(text: str) -> str:
    """A Lua string literal of ``text``: every byte but plain ASCII letters, digits and a few marks as ``\\ddd``."""
    plain = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:/=+&,;"
    return '"' + "".join(chr(byte) if byte in plain else f"\\{byte:03d}" for byte in text.encode()) + '"'


def script(request: Request) -> str:
    lines = [f"wrk.method = {lua_string(request.method)}"]
    lines += [f"wrk.headers[{lua_string(name)}] = {lua_string(value)}" for name, value in request.headers.items()]
    if request.body:
        lines.append(f"wrk.body = {lua_string(request.body)}")
    lines += [f"RESULT = {lua_string(_RESULT)}", f"FIRST = {lua_string(_FIRST)}"]
    return "\n".join(lines) + _COUNTING


def run(base: str, request: Request, seconds: int, concurrency: int, directory: Path) -> dict[str, Any]:
    """Replay ``request`` on ``concurrency`` connections for ``seconds``; the result in ``bench/load.py``'s shape.

    wrk's CPU time is its own rusage as a child of this process: the difference around its run.
    """
    if urlsplit(base).hostname != "127.0.0.1":
        raise SystemExit("the benchmark only sends traffic to 127.0.0.1")
    lua = directory / "wrk.lua"
    lua.write_text(script(request))
    command = [installed(), "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(lua)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(  # noqa: S603 - wrk from PATH on our own script and server
        [*command, base + request.path], capture_output=True, timeout=seconds + 120, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = finished.stdout.decode(errors="replace")
    found = [line for line in output.splitlines() if line.startswith((_RESULT, _FIRST))]
    if finished.returncode != 0 or len(found) != 2:
        raise SystemExit(f"wrk failed: {finished.stderr.decode(errors='replace').strip()[-2000:]}")
    counts = json.loads(found[0].removeprefix(_RESULT))
    first = found[1].removeprefix(_FIRST).strip()
    return result(counts, first, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def result(counts: dict[str, int], first: str, cpu_seconds: float) -> dict[str, Any]:
    """Every answer but a 2xx and every socket error is an error; only the 2xx answers are done."""
    socket_errors = {name: counts[name] for name in ("connect", "read", "write", "timeout")}
    problems = []
    if counts["unexpected"]:
        problems.append(f"answered {first}")
    if any(socket_errors.values()):
        problems.append("socket errors: " + ", ".join(f"{name} {n}" for name, n in socket_errors.items()))
    answered = counts["requests"] > 0
    return {
        "count": counts["requests"] - counts["unexpected"],
        "errors": counts["unexpected"] + sum(socket_errors.values()),
        "first_error": "; ".join(problems)[:300] or None,
        "elapsed": counts["duration_us"] / 1e6,
        "p50": counts["p50_us"] / 1e6 if answered else None,
        "p99": counts["p99_us"] / 1e6 if answered else None,
        "cpu_seconds": cpu_seconds,
    }
