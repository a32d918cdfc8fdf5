"""``idp serve``: upgrade the database, make a signing key if none exists, serve.

Everything shared is prepared once, in this process, before the workers start: the workers share
nothing but the database, Redis and the keys directory. One worker is served by uvicorn in this
process; several are forks of it made by gunicorn's arbiter (:mod:`idp.prefork`), which is imported
only then. Nothing that imports ``prometheus_client`` (the application, the HTTP protocol, which
counts the connections it cuts) is imported here before ``PROMETHEUS_MULTIPROC_DIR`` is set: the
library reads it once, when it is imported.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from ..keys import KeyStore
from ..migrate import upgrade
from ..observability.logs import configure_logging, logging_config
from ..settings import Settings, SettingsError


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number")
    return int(value)


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers from 1 to 64")
    return int(value)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8000)
    parser.add_argument("--workers", type=_workers, default=1)
    parser.set_defaults(run=run)


@contextmanager
def _metrics_shared_by(workers: int) -> Iterator[None]:
    """Several workers are several processes: prometheus_client then keeps every worker's values in
    files of a fresh directory, which ``/metrics`` sums. It is made before the workers start (they
    read the variable when they import prometheus_client) and removed when the server stops."""
    if workers == 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="idp-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.metrics_port == args.port:
        raise SettingsError(f"IDP_METRICS_PORT: must differ from the port idp serve answers on ({args.port})")
    configure_logging(logging.INFO, batched=True)
    upgrade(settings.database_url)
    store = KeyStore(settings.keys_dir)
    store.ensure()
    if settings.secret_key is None:
        store.secret_key()
    log_config = logging_config(logging.INFO, batched=True)
    ports = [args.port] if settings.metrics_port is None else [args.port, settings.metrics_port]
    with _metrics_shared_by(args.workers):
        if args.workers == 1:
            return _serve_in_this_process(args.host, ports, log_config)
        from ..prefork import PreforkServer

        PreforkServer(settings, host=args.host, ports=ports, workers=args.workers, logging=log_config).run()
    return 0


def _serve_in_this_process(host: str, ports: list[int], log_config: dict[str, Any]) -> int:
    """uvicorn on one socket per port, each bound (and logged) as ``uvicorn.run`` binds its one."""
    configs = [
        uvicorn.Config(
            "idp.app:create_app",
            factory=True,
            host=host,
            port=port,
            proxy_headers=False,
            server_header=False,
            http="idp.http_protocol:OneWriteHttpProtocol",
            ws="none",
            log_config=log_config,
            access_log=False,
        )
        for port in ports
    ]
    server = uvicorn.Server(configs[0])
    server.run(sockets=[config.bind_socket() for config in configs])
    return 0 if server.started else STARTUP_FAILURE
