"""``idp serve``: upgrade the database, make a signing key if none exists, serve.

Everything shared is prepared once, in this process, before the workers start: the workers share
nothing but the database, Redis and the keys directory.
"""

from __future__ import annotations

import argparse

import uvicorn

from ..keys import KeyStore
from ..migrate import upgrade
from ..settings import Settings


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number")
    return int(value)


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers from 1 to 64")
    return int(value)


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("serve", help="run the provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8000)
    parser.add_argument("--workers", type=_workers, default=1)
    parser.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    upgrade(settings.database_url)
    store = KeyStore(settings.keys_dir)
    store.ensure()
    if settings.secret_key is None:
        store.secret_key()
    uvicorn.run(
        "idp.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,
        server_header=False,
    )
    return 0
