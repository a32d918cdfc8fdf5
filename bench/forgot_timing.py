"""Asking for a password reset, timed for addresses with and without an account.

    .venv/bin/python bench/forgot_timing.py [--rounds 300] [--database-url URL]

``/password/forgot`` answers alike whether or not an account has the address, and must take alike
long too, or its timing tells an attacker which addresses have accounts. This starts
``idp serve --workers 2`` as ``run.py`` does (rate limits off, its delivery worker off so that sending the emails
never lands inside a timed request) on a fresh SQLite file or the PostgreSQL database named (give
it one of its own), makes ``--rounds`` people without a password straight in its database, then
posts the form from one keep-alive connection, one request at a time, alternating an address with
an account and one without. Each known address is asked for once: a fourth link within fifteen
minutes would take the path of a limited address instead. It prints the median and quartiles of
each kind in milliseconds, the difference of the medians, and the median of the differences within
each pair (requests one after the other, so a change of the machine's load touches both alike).
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from server import Server, environment, free_port

from idp.accounts.users import create_user
from idp.storage.database import make_engine, make_sessionmaker

WARM_UP = 30
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_people(database_url: str, count: int) -> list[str]:
    emails = [f"known-{secrets.token_hex(6)}@example.com" for _ in range(count)]
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as db:
            for email in emails:
                create_user(db, email=email, verified=True)
    finally:
        engine.dispose()
    return emails


def timed_request(http: httpx.Client, csrf_token: str, email: str) -> float:
    started = time.perf_counter()
    answer = http.post("/password/forgot", data={"csrf_token": csrf_token, "email": email})
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise SystemExit(f"/password/forgot answered {answer.status_code}: {answer.text[:300]}")
    return elapsed * 1000


def measure(base: str, known: list[str], rounds: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    with httpx.Client(base_url=base, timeout=30) as http:
        page = http.get("/password/forgot")
        found = _CSRF.search(page.text)
        if page.status_code != 200 or found is None:
            raise SystemExit(f"/password/forgot has no form: {page.status_code}")
        csrf_token = found.group(1)
        for _ in range(WARM_UP):
            timed_request(http, csrf_token, f"warm-{secrets.token_hex(6)}@example.com")
        for index in range(rounds):
            unknown = f"nobody-{secrets.token_hex(6)}@example.com"
            pair = [("known", known[index]), ("unknown", unknown)]
            if index % 2:
                pair.reverse()
            for kind, email in pair:
                timings[kind].append(timed_request(http, csrf_token, email))
    return timings


def summary(values: list[float]) -> str:
    first, median, third = statistics.quantiles(values, n=4)
    return f"median {median:.2f} ms (quartiles {first:.2f} to {third:.2f}), n={len(values)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300, help="requests of each kind (default 300)")
    parser.add_argument("--database-url", help="a PostgreSQL database of its own (default: a fresh SQLite file)")
    args = parser.parse_args()
    if args.rounds < 4:
        parser.error("--rounds must be at least 4")
    with tempfile.TemporaryDirectory(prefix="idp-forgot-") as directory:
        env = environment(Path(directory), free_port(), args.database_url, None)
        env["IDP_DELIVERY_WORKER"] = "off"
        server = Server.start(env, 2, Path(directory) / "serve.log")
        try:
            known = make_people(env["IDP_DATABASE_URL"], args.rounds)
            timings = measure(server.url, known, args.rounds)
        finally:
            server.stop()
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(f"/password/forgot on {database}, idp serve --workers 2, one request at a time")
    print(f"known address:   {summary(timings['known'])}")
    print(f"unknown address: {summary(timings['unknown'])}")
    difference = statistics.median(timings["known"]) - statistics.median(timings["unknown"])
    paired = statistics.median(k - u for k, u in zip(timings["known"], timings["unknown"], strict=True))
    print(f"known - unknown: {difference:+.2f} ms between the medians, {paired:+.2f} ms the median of each pair's")


if __name__ == "__main__":
    main()
