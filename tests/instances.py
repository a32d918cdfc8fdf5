"""Several ``idp serve`` processes behind one issuer, sharing one store, as the replicas behind a
load balancer do: what the tests of state shared across instances start and talk to
(``test_instances.py``, ``test_caches_across_instances.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import httpx

from .conftest import PASSWORD, SECRET_KEY, idp_json, serving
from .flows import TestUser as Person
from .services import RedisServer, postgresql_database

ISSUER = "http://idp.example"
STORES = ("postgresql+redis", "postgresql", "sqlite")
"""What the instances may share: PostgreSQL with Redis, PostgreSQL alone, or one SQLite file."""


class Instances:
    """The running processes: their URLs, a client of each kept open for the module (``webs``),
    and the command line on their store (``idp``)."""

    def __init__(self, environ: dict[str, str], urls: list[str]) -> None:
        self.environ = environ
        self.urls = urls
        self.webs = [self.web(index) for index in range(len(urls))]

    def web(self, index: int, cookies: CookieJar | None = None) -> httpx.Client:
        """A new browser-like client of one instance; clients given the same jar share its cookies."""
        return httpx.Client(base_url=self.urls[index], cookies=cookies, follow_redirects=False, timeout=15)

    def idp(self, *args: str) -> dict[str, Any]:
        return idp_json(self.environ, *args)

    def person(self, *options: str) -> Person:
        """Someone new, verified, made with the command line (and its ``options``: ``--name``)."""
        email = f"scale-{secrets.token_hex(4)}@example.com"
        made = self.idp("users", "create", "--email", email, "--password", PASSWORD, "--verified", *options)
        return Person(made["id"], email, PASSWORD)

    def close(self) -> None:
        for web in self.webs:
            web.close()


def store(kind: str, directory: Path, stack: ExitStack) -> dict[str, str]:
    """The settings of a store of ``kind`` (one of :data:`STORES`), made for ``stack``'s lifetime:
    a PostgreSQL database and a ``redis-server`` of their own, or a SQLite file in ``directory``."""
    if kind == "sqlite":
        return {"IDP_DATABASE_URL": f"sqlite:///{directory / 'idp.db'}"}
    url = stack.enter_context(postgresql_database()).render_as_string(hide_password=False)
    if kind == "postgresql":
        return {"IDP_DATABASE_URL": url}
    redis_server = RedisServer(directory)
    redis_server.start()
    stack.callback(redis_server.kill)
    return {"IDP_DATABASE_URL": url, "IDP_REDIS_URL": redis_server.url}


@contextmanager
def running(environ: dict[str, str], directory: Path, count: int = 3) -> Iterator[Instances]:
    """``count`` instances on the store and settings of ``environ``, behind :data:`ISSUER`, with
    their keys, their logs and their home in ``directory``."""
    environ = environ | {
        "IDP_KEYS_DIR": str(directory / "keys"),
        "IDP_SECRET_KEY": SECRET_KEY,
        "IDP_ISSUER": ISSUER,
        "HOME": str(directory),
    }
    with serving(environ, directory, count, ISSUER) as urls:
        instances = Instances(environ, urls)
        try:
            yield instances
        finally:
            instances.close()
