"""The benchmark: ``idp serve --workers 2`` under load, beside what the machine itself can do.

    .venv/bin/python bench/run.py [--seconds 8] [--concurrency 16] [--database-url URL] [--redis-url URL]
                                  [--peer DIR]

It measures the machine's RSA-2048 signing and argon2 hashing rates, starts the provider twice
(on an empty database, then on the one it made) to time start-up to a ready ``/readyz``, creates a
client and a person with the real CLI, drives each scenario for ``--seconds`` from a separate load
process (wrk for the stateless ones, ``bench/wrk.py``; the async httpx loop of ``bench/load.py``
for refresh chains and sign-ins), and prints Markdown tables: throughput and latency, server CPU
and resident memory per worker, the load generator's CPU, and the issue's targets with "met" or
"not met". With ``--peer DIR`` (the folder of node oidc-provider's reference server, see
``bench/peer.py``) it then runs the judged scenarios against both, alternating idp and the peer
:data:`ROUNDS` times with ``wrk -t1 -c32``, and prints idp's figures as ratios of the peer's.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stateless
import wrk
from capacity import HashRate, Rate, argon2_rate, rsa_signing_rate
from load import Job
from peer import JUDGED, Peer
from server import Server, environment, free_port, idp, pss_mb

WORKERS = 2
SCENARIOS = ("discovery", "jwks", "client_credentials", "refresh_token", "introspection", "userinfo", "sign_in")
REDIRECT_URI = "http://127.0.0.1:9/callback"
LOAD = Path(__file__).with_name("load.py")
ROUNDS = 2
PEER_CONCURRENCY = 32
PEER_GOALS = {"discovery": 1.5, "jwks": 1.5, "client_credentials": 1.2, "introspection": 1.0}


@dataclass
class Scenario:
    name: str
    result: dict[str, Any]
    server_cpu: float
    peak_rss: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.result["count"] / self.result["elapsed"]

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu / max(1, self.result["count"])


@dataclass
class Watch:
    server_cpu: float = 0.0
    peak_rss: list[float] = field(default_factory=list)


class RssSampler(threading.Thread):
    """The largest resident size each worker reaches while a scenario runs."""

    def __init__(self, server: Server | Peer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak = server.rss()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = [max(a, b) for a, b in zip(self.peak, self.server.rss(), strict=True)]


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return {
        "cpus": f"{len(os.sched_getaffinity(0))} (nproc)",
        "cpu model": model.group(1) if model else platform.processor() or "unknown",
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


@contextmanager
def watching(server: Server | Peer) -> Iterator[Watch]:
    """The server's CPU time and each worker's peak resident size over the block."""
    watch = Watch()
    sampler = RssSampler(server)
    sampler.start()
    cpu_before = server.cpu()
    try:
        yield watch
    finally:
        watch.server_cpu = server.cpu() - cpu_before
        sampler.done.set()
        sampler.join()
        watch.peak_rss = sampler.peak


def run_stateless(
    server: Server | Peer, scenario: stateless.Stateless, seconds: int, concurrency: int, directory: Path
) -> Scenario:
    """One request checked with httpx, then wrk for ``seconds``; the server is watched while wrk runs."""
    stateless.confirm(server.url, scenario)
    with watching(server) as watch:
        result = wrk.run(server.url, scenario.request, seconds, concurrency, directory)
    return Scenario(scenario.name, result, watch.server_cpu, watch.peak_rss)


def run_stateful(server: Server, job: dict[str, Any], name: str) -> Scenario:
    """Run one scenario's load process; the server's CPU and memory are watched between its start and stop lines."""
    loader = subprocess.Popen(  # noqa: S603 - this interpreter running bench/load.py
        [sys.executable, str(LOAD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(job["seconds"] + 300, loader.kill)
    watchdog.start()
    try:
        assert loader.stdin is not None and loader.stdout is not None and loader.stderr is not None
        loader.stdin.write(json.dumps({**job, "scenario": name}))
        loader.stdin.close()
        started = loader.stdout.readline().strip() == "start"
        if started:
            with watching(server) as watch:
                loader.stdout.readline()
        output, errors = loader.stdout.read(), loader.stderr.read()
        loader.wait()
    finally:
        watchdog.cancel()
    if not started or loader.returncode != 0:
        raise SystemExit(f"load generator failed on {name}: {errors.strip()[-2000:]}")
    return Scenario(name, json.loads(output), watch.server_cpu, watch.peak_rss)


@dataclass
class Pair:
    name: str
    idp: list[Scenario]
    peer: list[Scenario]

    @staticmethod
    def mean(runs: list[Scenario], figure: str) -> float:
        return sum(getattr(run, figure) for run in runs) / len(runs)


def run_against_peer(
    server: Server, peer: Peer, replayed: dict[str, stateless.Stateless], seconds: int, directory: Path
) -> list[Pair]:
    """Each judged scenario on idp, then on the peer, :data:`ROUNDS` times over."""
    theirs = {s.name: s for s in peer.scenarios()}
    pairs = []
    for name in JUDGED:
        print(f"  {name}: idp and the peer, alternating ...", file=sys.stderr)
        pair = Pair(name, [], [])
        for _ in range(ROUNDS):
            pair.idp.append(run_stateless(server, replayed[name], seconds, PEER_CONCURRENCY, directory))
            pair.peer.append(run_stateless(peer, theirs[name], seconds, PEER_CONCURRENCY, directory))
        pairs.append(pair)
    return pairs


def peer_report(pairs: list[Pair], rsa: tuple[Rate, Rate]) -> str:
    rows = []
    for pair in pairs:
        ours, theirs = Pair.mean(pair.idp, "rate"), Pair.mean(pair.peer, "rate")
        our_cpu, their_cpu = Pair.mean(pair.idp, "cpu_ms_per_request"), Pair.mean(pair.peer, "cpu_ms_per_request")
        errors = sum(s.result["errors"] for s in pair.idp + pair.peer)
        goal = PEER_GOALS[pair.name]
        rows.append(
            [
                f"{pair.name}, beside the peer",
                fmt(theirs, 0),
                fmt(ours, 0),
                fmt(ours / theirs, 2),
                fmt(their_cpu, 3),
                fmt(our_cpu, 3),
                fmt(our_cpu / their_cpu, 2),
                str(errors),
                f">= {goal}",
                verdict(ours / theirs >= goal),
            ]
        )
    header = [
        "scenario (wrk -t1 -c32)",
        "peer per second",
        "idp per second",
        "idp / peer",
        "peer CPU ms each",
        "idp CPU ms each",
        "CPU each, idp / peer",
        "errors",
        "goal",
        "",
    ]
    machine = (
        f"the machine, same run: {fmt(rsa[0].per_second, 0)} RSA-2048 signatures a second on 1 core, "
        f"{fmt(rsa[1].per_second, 0)} on 2"
    )
    title = f"idp beside node oidc-provider, each with {WORKERS} processes, mean of {ROUNDS} alternating rounds"
    return f"{title}\n\n{table(header, rows)}\n\n{machine}"


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def report(
    about: dict[str, str],
    rsa: tuple[Rate, Rate],
    argon2: tuple[HashRate, HashRate],
    argon2_parameters: str,
    ready: tuple[float, float],
    idle_rss: list[float],
    idle_pss: list[float],
    parent_pss: float,
    scenarios: list[Scenario],
) -> str:
    by_name = {s.name: s for s in scenarios}
    out = [table(["machine", ""], [[k, v] for k, v in about.items()])]
    out.append(
        table(
            [
                "scenario",
                "per second",
                "p50 ms",
                "p99 ms",
                "done",
                "errors",
                "server CPU ms each",
                f"{WORKERS} cores / server CPU each",
                "load generator CPU",
                "peak RSS per worker MB",
            ],
            [
                [
                    "complete password sign-ins" if s.name == "sign_in" else s.name,
                    fmt(s.rate),
                    fmt(s.result["p50"] and 1000 * s.result["p50"]),
                    fmt(s.result["p99"] and 1000 * s.result["p99"]),
                    str(s.result["count"]),
                    str(s.result["errors"]),
                    fmt(s.cpu_ms_per_request, 2),
                    fmt(WORKERS * 1000 / s.cpu_ms_per_request, 0) if s.cpu_ms_per_request else "-",
                    f"{100 * s.result['cpu_seconds'] / s.result['elapsed']:.0f}%",
                    " / ".join(fmt(mb) for mb in s.peak_rss),
                ]
                for s in scenarios
            ],
        )
    )
    errors = [
        f"- {s.name}: {s.result['errors']} errors, first: {s.result['first_error']}"
        for s in scenarios
        if s.result["errors"]
    ]
    if errors:
        out.append("\n".join(errors))
    one_core, two = argon2
    out.append(
        table(
            ["the machine, same run", "per second", "CPU ms each", "how"],
            [
                ["RSA-2048 signatures, 1 core", fmt(rsa[0].per_second), fmt(1000 / rsa[0].per_second, 3), rsa[0].how],
                ["RSA-2048 signatures, 2 cores", fmt(rsa[1].per_second), "-", rsa[1].how],
                [
                    "argon2 hashes, 1 core",
                    fmt(one_core.per_second),
                    fmt(1000 * one_core.cpu_seconds_per_hash),
                    f"idp.accounts.passwords.hash_password ({argon2_parameters}), 1 process pinned to 1 core",
                ],
                [
                    "argon2 hashes, 2 processes",
                    fmt(two.per_second),
                    fmt(1000 * two.cpu_seconds_per_hash),
                    "the same, 2 processes",
                ],
            ],
        )
    )
    cc, sign_in = by_name["client_credentials"], by_name["sign_in"]
    signature_ms = 1000 / rsa[0].per_second
    cc_ratio = cc.rate / rsa[1].per_second
    cc_signatures = cc.cpu_ms_per_request / signature_ms
    sign_in_cpu_ratio = sign_in.cpu_ms_per_request / (1000 * one_core.cpu_seconds_per_hash)
    sign_in_rate_ratio = two.per_second / sign_in.rate if sign_in.rate else float("inf")
    peak = max(max(s.peak_rss) for s in scenarios)
    peak_without_sign_in = max(max(s.peak_rss) for s in scenarios if s.name != "sign_in")
    out.append(
        table(
            ["target (per 2 cores)", "measured", "target", ""],
            [
                [
                    "client_credentials per second / RSA-2048 signatures per second on 2 cores",
                    fmt(cc_ratio, 3),
                    ">= 0.5",
                    verdict(cc_ratio >= 0.5),
                ],
                [
                    "the same in server CPU: one client_credentials request, in RSA-2048 signatures",
                    fmt(cc_signatures),
                    "<= 2",
                    verdict(cc_signatures <= 2),
                ],
                [
                    "a complete password sign-in's server CPU / one argon2 hash's CPU",
                    fmt(sign_in_cpu_ratio, 2),
                    "<= 1.25",
                    verdict(sign_in_cpu_ratio <= 1.25),
                ],
                [
                    "the same in throughput: argon2 hashes per second on 2 processes / sign-ins per second",
                    fmt(sign_in_rate_ratio, 2),
                    "<= 1.25",
                    verdict(sign_in_rate_ratio <= 1.25),
                ],
                ["ready on an empty database (new key), s", fmt(ready[0], 2), "< 1", verdict(ready[0] < 1)],
                ["ready on a migrated database, s", fmt(ready[1], 2), "< 1", verdict(ready[1] < 1)],
                [
                    "RSS per worker, idle, MB",
                    " / ".join(fmt(mb) for mb in idle_rss),
                    "< 80",
                    verdict(max(idle_rss) < 80),
                ],
                [
                    "PSS per worker, idle, MB (shared pages split among the processes)",
                    " / ".join(fmt(mb) for mb in idle_pss),
                    "-",
                    "-",
                ],
                ["PSS of the parent that forks the workers, idle, MB", fmt(parent_pss), "-", "-"],
                [
                    "RSS per worker under load but sign-ins, peak MB",
                    fmt(peak_without_sign_in),
                    "< 80",
                    verdict(peak_without_sign_in < 80),
                ],
                ["RSS per worker under load with sign-ins, peak MB", fmt(peak), "< 80", verdict(peak < 80)],
            ],
        )
    )
    return "\n\n".join(out)


def compiled() -> None:
    """Writes the bytecode of idp's own modules, as an installed wheel has it, so that the times to
    ready are not of compiling: from a source checkout with PYTHONDONTWRITEBYTECODE set, every
    process would compile the whole package again (a third of a second on a slow machine)."""
    import idp

    compileall.compile_dir(Path(idp.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="whole seconds of load per scenario (default 8)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent connections or chains (default 16)")
    parser.add_argument("--database-url", help="a PostgreSQL database of its own (default: a fresh SQLite file)")
    parser.add_argument("--redis-url", help="a Redis of its own")
    parser.add_argument("--peer", type=Path, help="node oidc-provider's reference server folder, to compare with")
    args = parser.parse_args()
    if args.seconds < 1 or args.concurrency < 1:
        parser.error("--seconds and --concurrency must be positive")
    wrk.installed()
    compiled()

    about = machine()
    about["database"] = "PostgreSQL" if args.database_url else "SQLite (a fresh file)"
    about["redis"] = "yes" if args.redis_url else "no (in-process store)"
    about["load"] = (
        f"{args.concurrency} concurrent connections, {args.seconds} s a scenario, in a separate process: "
        "wrk -t1 for the stateless scenarios, an async httpx loop for refresh chains and sign-ins"
    )
    about["load average at start"] = load_average()
    print(f"measuring the machine, then {len(SCENARIOS)} scenarios of {args.seconds} s ...", file=sys.stderr)

    capacity_seconds = min(3, args.seconds)
    rsa = (rsa_signing_rate(capacity_seconds, 1), rsa_signing_rate(capacity_seconds, WORKERS))
    argon2 = (argon2_rate(capacity_seconds, 1), argon2_rate(capacity_seconds, WORKERS))
    from idp.accounts.passwords import hash_password

    argon2_parameters = "argon2id " + hash_password("parameters").split("$")[3]

    with tempfile.TemporaryDirectory(prefix="idp-bench-") as directory:
        env = environment(Path(directory), free_port(), args.database_url, args.redis_url)
        log = Path(directory) / "serve.log"
        fresh = Server.start(env, WORKERS, log)
        fresh.stop()
        client = idp(
            env,
            "clients",
            "create",
            "--name",
            "benchmark",
            "--redirect-uri",
            REDIRECT_URI,
            "--first-party",
            "--grant-type",
            "authorization_code",
            "--grant-type",
            "refresh_token",
            "--grant-type",
            "client_credentials",
        )
        email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(18)
        person = idp(
            env, "users", "create", "--email", email, "--password", password, "--verified", "--name", "Bench Mark"
        )
        server = Server.start(env, WORKERS, log)
        peer = Peer.start(args.peer, Path(directory), WORKERS) if args.peer else None
        pairs: list[Pair] = []
        try:
            time.sleep(1)
            idle_rss, idle_pss, parent_pss = server.rss(), server.pss(), pss_mb(server.process.pid)
            job = {
                "base": server.url,
                "seconds": args.seconds,
                "concurrency": args.concurrency,
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
                "redirect_uri": REDIRECT_URI,
                "email": email,
                "password": password,
            }
            replayed = {s.name: s for s in stateless.scenarios(Job(**job, scenario="sign_in"), person["id"])}
            measured = []
            for name in SCENARIOS:
                print(f"  {name} ...", file=sys.stderr)
                if name in replayed:
                    measured.append(
                        run_stateless(server, replayed[name], args.seconds, args.concurrency, Path(directory))
                    )
                else:
                    measured.append(run_stateful(server, job, name))
            if peer is not None:
                pairs = run_against_peer(server, peer, replayed, args.seconds, Path(directory))
        finally:
            server.stop()
            if peer is not None:
                peer.stop()
    about["load average at end"] = load_average()
    print(
        report(
            about,
            rsa,
            argon2,
            argon2_parameters,
            (fresh.ready_seconds, server.ready_seconds),
            idle_rss,
            idle_pss,
            parent_pss,
            measured,
        )
    )
    if pairs:
        print("\n" + peer_report(pairs, rsa))


if __name__ == "__main__":
    main()
