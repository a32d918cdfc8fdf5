"""The reference peer, node oidc-provider, run beside idp so that both are measured in one run.

``--peer DIR`` names the peer's folder (its ``server.js`` and ``package-lock.json``). It is copied
into the benchmark's own directory and installed there with ``npm ci`` (the folder may be
read-only), then started with 2 processes, as idp is, on a port of 127.0.0.1. It serves discovery,
JWKS, ``client_credentials`` for one client and introspection of one opaque token that each of its
workers holds in memory: storage costs it nothing, so it is the lower bound a provider with real
storage is judged against.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from server import cpu_seconds, forked_workers, free_port, rss_mb, wait_ready
from stateless import Stateless, client_credentials, discovery, introspection, jwks

CLIENT_ID = "bench"
CLIENT_SECRET = "s3cret-bench"
SEED_TOKEN = "seedtoken-bench"
JUDGED = ("discovery", "jwks", "client_credentials", "introspection")
"""The scenarios the two are compared on, in the order they are run."""


@dataclass
class Peer:
    process: subprocess.Popen[bytes]
    url: str
    workers: list[int]

    @classmethod
    def start(cls, source: Path, directory: Path, workers: int) -> Peer:
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            raise SystemExit("--peer needs Node.js and npm (apt-get install nodejs npm)")
        if not (source / "server.js").is_file():
            raise SystemExit(f"--peer {source}: no server.js there")
        folder = directory / "peer"
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("node_modules"))
        installed = subprocess.run(  # noqa: S603 - npm from PATH in our own copy of the peer
            [npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, timeout=600, check=False
        )
        if installed.returncode != 0:
            raise SystemExit(f"npm ci for the peer failed: {installed.stderr.decode(errors='replace')[-2000:]}")
        port = free_port()
        env = os.environ | {
            "PEER_PORT": str(port),
            "PEER_WORKERS": str(workers),
            "PEER_CLIENT_ID": CLIENT_ID,
            "PEER_CLIENT_SECRET": CLIENT_SECRET,
            "PEER_SEED_TOKEN": SEED_TOKEN,
            "NODE_ENV": "production",
        }
        log = directory / "peer.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(  # noqa: S603 - node from PATH on the peer's own server.js
                [node, "server.js"], cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, url + "/.well-known/openid-configuration", 30, "the peer", log)
        return cls(process, url, forked_workers(process, workers, 30) or [process.pid])

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.workers)

    def rss(self) -> list[float]:
        return [rss_mb(pid) for pid in self.workers]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def scenarios(self) -> list[Stateless]:
        """The judged scenarios against the peer, each checked once as idp's are."""
        return [
            discovery(self.url),
            jwks("/jwks"),
            client_credentials("/token", CLIENT_ID, CLIENT_SECRET),
            introspection("/token/introspection", CLIENT_ID, CLIENT_SECRET, SEED_TOKEN),
        ]
