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
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from server import _children, cpu_seconds, free_port, rss_mb
from stateless import FORM, Request, Stateless, basic_auth

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
        log = (directory / "peer.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - node from PATH on the peer's own server.js
            [node, "server.js"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the peer exited: {(directory / 'peer.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            process.kill()
            raise SystemExit("the peer was not ready within 30 s")
        while len(_children(process.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        return cls(process, url, _children(process.pid) or [process.pid])

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
        client = {"Authorization": basic_auth(CLIENT_ID, CLIENT_SECRET), "Content-Type": FORM}
        return [
            Stateless(
                "discovery",
                Request("GET", "/.well-known/openid-configuration"),
                f"the issuer {self.url}",
                lambda answer: answer.get("issuer") == self.url,
            ),
            Stateless("jwks", Request("GET", "/jwks"), "at least one key", lambda answer: bool(answer.get("keys"))),
            Stateless(
                "client_credentials",
                Request("POST", "/token", client, "grant_type=client_credentials"),
                "a Bearer access_token",
                lambda answer: bool(answer.get("access_token")),
            ),
            Stateless(
                "introspection",
                Request("POST", "/token/introspection", client, f"token={SEED_TOKEN}"),
                "an active token",
                lambda answer: answer.get("active") is True,
            ),
        ]
