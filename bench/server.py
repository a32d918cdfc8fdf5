"""``idp serve`` under test: started with the real command, watched through /proc, stopped again.

The server runs in a directory of its own (its SQLite file, keys, secret key and working directory,
so no ``.env`` of the checkout leaks in) with rate limiting off, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

IDP = Path(sys.executable).parent / "idp"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# The sockets that keep the ports ``free_port`` gave out from anyone else while the benchmark runs.
_RESERVED_PORTS: list[socket.socket] = []


def free_port() -> int:
    """A port of 127.0.0.1 that stays ours while the benchmark runs, though its server stops and starts.

    Bound with SO_REUSEADDR and never listening, the socket keeps the kernel from giving the port to
    another process (the suite may run beside the benchmark) while ``idp serve``, which binds with
    SO_REUSEADDR too, can still take it.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _RESERVED_PORTS.append(sock)
    return sock.getsockname()[1]


def environment(directory: Path, port: int, database_url: str | None, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env |= {
        "IDP_ISSUER": f"http://127.0.0.1:{port}",
        "IDP_DATABASE_URL": database_url or f"sqlite:///{directory / 'idp.db'}",
        "IDP_KEYS_DIR": str(directory / "keys"),
        "IDP_RATE_LIMITING": "off",
        "HOME": str(directory),
    }
    if redis_url:
        env["IDP_REDIS_URL"] = redis_url
    return env


def idp(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run a ``create`` command of the real CLI; the JSON object it printed."""
    result = subprocess.run(  # noqa: S603 - the project's own console script
        [str(IDP), *args], env=env, cwd=env["HOME"], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"idp {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """The proportional set size: each shared page (libraries, copy-on-write) split among the
    processes that map it, so the workers' figures add up to what they really hold together."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system time of every thread of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_ready(process: subprocess.Popen[bytes], url: str, within: float, name: str, log: Path) -> None:
    """Return once ``url`` answers 200; stop the benchmark if ``process`` exits first or ``within``
    seconds pass (killing it then), quoting the end of its ``log``. idp's start-up is timed by this,
    so it asks every 5 ms."""
    deadline = time.monotonic() + within
    with httpx.Client(timeout=1) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited: {log.read_text()[-2000:]}")
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    process.kill()
    raise SystemExit(f"{name} was not ready within {within:g} s: {log.read_text()[-2000:]}")


def forked_workers(process: subprocess.Popen[bytes], workers: int, within: float) -> list[int]:
    """The worker processes of ``process``, once it has ``workers`` of them or ``within`` seconds
    have passed: a server answers as soon as its first worker does."""
    deadline = time.monotonic() + within
    while len(_children(process.pid)) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return _children(process.pid)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    ready_seconds: float
    workers: list[int]

    @classmethod
    def start(cls, env: dict[str, str], workers: int, log: Path) -> Server:
        """Start ``idp serve`` and time it from the process start to the first ready ``/readyz``."""
        url = env["IDP_ISSUER"]
        port = url.rsplit(":", 1)[1]
        with log.open("ab") as handle:
            started = time.perf_counter()
            process = subprocess.Popen(  # noqa: S603 - the project's own console script
                [str(IDP), "serve", "--port", port, "--workers", str(workers)],
                env=env,
                cwd=env["HOME"],
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        wait_ready(process, url + "/readyz", 60, "idp serve", log)
        ready = time.perf_counter() - started
        # Every worker must be serving before anything is measured on them.
        pids = forked_workers(process, workers, 60)
        with httpx.Client(timeout=1) as http:
            for _ in range(20 * workers):
                http.get(url + "/readyz")
        return cls(process, url, ready, pids)

    def rss(self) -> list[float]:
        return [rss_mb(pid) for pid in self.workers]

    def pss(self) -> list[float]:
        return [pss_mb(pid) for pid in self.workers]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.workers)

    def stop(self) -> None:
        """SIGTERM to the server we started, which stops its own workers; SIGKILL if it lingers."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for pid in [*self.workers, self.process.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait(timeout=10)
