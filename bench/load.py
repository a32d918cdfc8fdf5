"""The load generator of the stateful scenarios: one scenario, a fixed number of concurrent chains, in its own process.

Refresh chains and complete password sign-ins change state with every request (each refresh
presents the token the previous one returned, each sign-in is a new browser), which a replayed
request cannot do; the stateless scenarios are wrk's (``bench/stateless.py``). ``bench/run.py``
starts this file with a JSON job on stdin; on stdout it writes a line ``start`` when the timed part
begins (what a scenario needs, like the refresh chains' first sign-ins, is made before), a line
``stop`` when it ends, and then one JSON result; running apart from the benchmark's own process
keeps the measuring out of the server's way and the load generator's CPU time measurable on its
own. Every loop ends by itself at the deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


class UnexpectedAnswer(Exception):
    """The server answered, but not as a working provider would."""


@dataclass
class Job:
    base: str
    scenario: str
    seconds: int
    concurrency: int
    client_id: str
    client_secret: str
    redirect_uri: str
    email: str
    password: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def failed(self, exc: Exception) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"[:300]


def _expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        request = response.request
        raise UnexpectedAnswer(f"{request.method} {request.url.path}: {response.status_code} {response.text[:200]}")
    return response


async def sign_in(http: httpx.AsyncClient, job: Job, endpoints: dict[str, str]) -> dict[str, Any]:
    """One complete password sign-in of a new browser: authorize, the sign-in page and its POST, code exchange."""
    http.cookies.clear()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": job.client_id,
        "redirect_uri": job.redirect_uri,
        "scope": "openid profile email offline_access",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    login = _expect(await http.get(endpoints["authorization_endpoint"], params=params), 303).headers["location"]
    page = _expect(await http.get(login), 200)
    fields = {name: value.replace("&amp;", "&") for name, value in _HIDDEN.findall(page.text)}
    posted = _expect(await http.post("/login", data={**fields, "username": job.email, "password": job.password}), 303)
    callback = posted.headers["location"]
    if not callback.startswith(job.redirect_uri):
        raise UnexpectedAnswer(f"sign-in went to {callback[:200]}")
    code = parse_qs(urlsplit(callback).query)["code"][0]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": job.redirect_uri,
        "code_verifier": verifier,
    }
    return _expect(await http.post(endpoints["token_endpoint"], data=data, auth=job.auth), 200).json()


Step = Callable[[httpx.AsyncClient], Awaitable[None]]


async def endpoints_of(http: httpx.AsyncClient, base: str) -> dict[str, str]:
    """The provider's own endpoints by their discovery names, as paths."""
    discovery = _expect(await http.get("/.well-known/openid-configuration"), 200).json()
    return {
        name: urlsplit(url).path for name, url in discovery.items() if isinstance(url, str) and url.startswith(base)
    }


async def _steps(http: httpx.AsyncClient, job: Job, endpoints: dict[str, str]) -> list[Step]:
    """One step per chain for the scenario; what a step needs is prepared here, before the clock starts."""
    if job.scenario == "sign_in":

        async def complete_sign_in(client: httpx.AsyncClient) -> None:
            await sign_in(client, job, endpoints)

        return [complete_sign_in] * job.concurrency
    if job.scenario == "refresh_token":
        return [
            _refresh_chain(job, endpoints, (await sign_in(http, job, endpoints))["refresh_token"])
            for _ in range(job.concurrency)
        ]
    raise SystemExit(f"unknown scenario {job.scenario!r}")


def _refresh_chain(job: Job, endpoints: dict[str, str], first: str) -> Step:
    """Each request presents the refresh token the previous one returned: rotation on every use."""
    current = first

    async def refresh(client: httpx.AsyncClient) -> None:
        nonlocal current
        data = {"grant_type": "refresh_token", "refresh_token": current}
        current = _expect(await client.post(endpoints["token_endpoint"], data=data, auth=job.auth), 200).json()[
            "refresh_token"
        ]

    return refresh


async def run(job: Job) -> dict[str, Any]:
    if urlsplit(job.base).hostname != "127.0.0.1":
        raise SystemExit("the benchmark only sends traffic to 127.0.0.1")
    limits = httpx.Limits(max_connections=job.concurrency + 1, max_keepalive_connections=job.concurrency + 1)
    async with httpx.AsyncClient(base_url=job.base, limits=limits, timeout=30, follow_redirects=False) as http:
        endpoints = await endpoints_of(http, job.base)
        steps = await _steps(http, job, endpoints)
        tally = Tally()

        async def chain(step: Step, client: httpx.AsyncClient) -> None:
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                try:
                    await step(client)
                except (httpx.HTTPError, UnexpectedAnswer, KeyError) as exc:
                    tally.failed(exc)
                    if job.scenario == "refresh_token":
                        return  # the chain's token is gone; the others carry on
                    continue
                tally.latencies.append(time.perf_counter() - begun)

        async with AsyncExitStack() as stack:
            # Sign-ins keep cookies: every chain is a browser of its own.
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=job.base, timeout=30))
                if job.scenario == "sign_in"
                else http
                for _ in steps
            ]
            print("start", flush=True)
            started = time.perf_counter()
            deadline = started + job.seconds
            cpu_started = time.process_time()
            await asyncio.gather(*(chain(step, client) for step, client in zip(steps, clients, strict=True)))
            elapsed = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            print("stop", flush=True)
    ordered = sorted(tally.latencies)
    return {
        "scenario": job.scenario,
        "count": len(ordered),
        "errors": tally.errors,
        "first_error": tally.first_error,
        "elapsed": elapsed,
        "p50": ordered[len(ordered) // 2] if ordered else None,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else None,
        "cpu_seconds": cpu_seconds,
    }


def main() -> None:
    job = Job(**json.load(sys.stdin))
    try:
        import uvloop  # uvicorn[standard] brings it; a faster loop leaves more of the machine to the server
    except ImportError:
        result = asyncio.run(run(job))
    else:
        result = uvloop.run(run(job))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
