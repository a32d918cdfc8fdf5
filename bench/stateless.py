"""The stateless scenarios: the same request every time, so wrk can replay it, checked once with httpx first.

wrk only counts status codes, so a provider answering 200 with a wrong body would pass under
load; one request of the same shape, sent before the timed part and read in full, makes sure
the answer is the right one. Introspection and userinfo all present one access token, got from a
complete sign-in before the clock starts. The peer (``bench/peer.py``) is asked the same
requests, built by the same functions, so that the two are compared on equal terms.
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


def discovery(issuer: str) -> Stateless:
    """The discovery document of the provider ``issuer`` names."""
    return Stateless(
        "discovery",
        Request("GET", "/.well-known/openid-configuration"),
        f"the issuer {issuer}",
        lambda answer: answer.get("issuer") == issuer,
    )


def jwks(path: str) -> Stateless:
    """The key set at ``path``, which must hold a key."""
    return Stateless("jwks", Request("GET", path), "at least one key", lambda answer: bool(answer.get("keys")))


def _client(client_id: str, client_secret: str) -> dict[str, str]:
    """The headers of a confidential client's form POST."""
    return {"Authorization": basic_auth(client_id, client_secret), "Content-Type": FORM}


def client_credentials(path: str, client_id: str, client_secret: str) -> Stateless:
    """A token for the client itself, from the token endpoint at ``path``."""
    return Stateless(
        "client_credentials",
        Request("POST", path, _client(client_id, client_secret), "grant_type=client_credentials"),
        "a Bearer access_token",
        lambda answer: bool(answer.get("access_token")) and str(answer.get("token_type")).lower() == "bearer",
    )


def introspection(path: str, client_id: str, client_secret: str, token: str, sub: str | None = None) -> Stateless:
    """Introspection of ``token``, which must be active, and ``sub``'s when one is given."""
    return Stateless(
        "introspection",
        Request("POST", path, _client(client_id, client_secret), f"token={quote_plus(token)}"),
        "an active token" + (f" of {sub}" if sub else ""),
        lambda answer: answer.get("active") is True and (sub is None or answer.get("sub") == sub),
    )


def scenarios(job: Job, person_id: str) -> list[Stateless]:
    """The five stateless scenarios against the provider at ``job.base``, each with what a right answer holds."""
    endpoints, access_token = asyncio.run(_signed_in(job))
    return [
        discovery(job.base),
        jwks(endpoints["jwks_uri"]),
        client_credentials(endpoints["token_endpoint"], job.client_id, job.client_secret),
        introspection(
            endpoints["introspection_endpoint"], job.client_id, job.client_secret, access_token, sub=person_id
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
