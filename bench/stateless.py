"""The stateless scenarios: the same request every time, so wrk can replay it, checked once with httpx first.

wrk only counts status codes, so a provider answering 200 with a wrong body would pass under
load; one request of the same shape, sent before the timed part and read in full, makes sure
the answer is the right one. Introspection and userinfo all present one access token, got from a
complete sign-in before the clock starts.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import httpx
from load import Job, endpoints_of, sign_in

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass(frozen=True)
class Stateless:
    name: str
    request: Request
    expected: str
    right: Callable[[dict[str, Any]], bool]


def basic_auth(client_id: str, client_secret: str) -> str:
    """client_secret_basic as RFC 6749 section 2.3.1 has it: both parts form-encoded, then base64."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def scenarios(job: Job, person_id: str) -> list[Stateless]:
    """The five stateless scenarios against the provider at ``job.base``, each with what a right answer holds."""
    endpoints, access_token = asyncio.run(_signed_in(job))
    client = {"Authorization": basic_auth(job.client_id, job.client_secret), "Content-Type": FORM}
    return [
        Stateless(
            "discovery",
            Request("GET", "/.well-known/openid-configuration"),
            f"the issuer {job.base}",
            lambda answer: answer.get("issuer") == job.base,
        ),
        Stateless(
            "jwks",
            Request("GET", endpoints["jwks_uri"]),
            "at least one key",
            lambda answer: bool(answer.get("keys")),
        ),
        Stateless(
            "client_credentials",
            Request("POST", endpoints["token_endpoint"], client, "grant_type=client_credentials"),
            "a Bearer access_token",
            lambda answer: bool(answer.get("access_token")) and str(answer.get("token_type")).lower() == "bearer",
        ),
        Stateless(
            "introspection",
            Request("POST", endpoints["introspection_endpoint"], client, f"token={quote_plus(access_token)}"),
            f"an active token of {person_id}",
            lambda answer: answer.get("active") is True and answer.get("sub") == person_id,
        ),
        Stateless(
            "userinfo",
            Request("GET", endpoints["userinfo_endpoint"], {"Authorization": f"Bearer {access_token}"}),
            f"the sub {person_id}",
            lambda answer: answer.get("sub") == person_id,
        ),
    ]


async def _signed_in(job: Job) -> tuple[dict[str, str], str]:
    async with httpx.AsyncClient(base_url=job.base, timeout=30) as http:
        endpoints = await endpoints_of(http, job.base)
        return endpoints, (await sign_in(http, job, endpoints))["access_token"]


def confirm(base: str, scenario: Stateless) -> None:
    """Send the scenario's request once and stop the benchmark unless the answer is a right one."""
    request = scenario.request
    response = httpx.request(
        request.method, base + request.path, headers=request.headers, content=request.body.encode() or None, timeout=30
    )
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict) or not scenario.right(answer):
        raise SystemExit(
            f"{scenario.name}: {request.method} {request.path} answered {response.status_code} "
            f"{response.text[:200]!r}, not {scenario.expected}"
        )
