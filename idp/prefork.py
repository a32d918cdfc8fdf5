"""Several workers forked by gunicorn's arbiter from one process that has already built the app.

A spawned worker imports everything again (most of a second each, and two of them at once share
two cores), so ``--workers 2`` was ready in twice the time of one. A forked worker starts from the
parent's memory: it is ready as soon as it exists, and the pages it does not write stay shared.
The arbiter also replaces a worker that dies and, on SIGTERM, lets each finish its requests; on
SIGINT or SIGQUIT too (see :class:`Worker`).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from types import FrameType
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from starlette.applications import Starlette
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from .app import create_app
from .http_protocol import OneWriteHttpProtocol
from .settings import Settings


class Worker(UvicornWorker):
    """uvicorn with the settings ``idp serve`` gives it when it runs one worker itself, stopped by
    SIGQUIT as by SIGTERM (:class:`_WorkerServer`). The arbiter passes SIGINT and SIGQUIT on to
    its workers as SIGQUIT, on which uvicorn_worker only sets a flag of gunicorn's that uvicorn
    never reads: the workers served on until the arbiter killed them, 20 s later."""

    CONFIG_KWARGS = {
        "loop": "auto",
        "http": OneWriteHttpProtocol,
        "ws": "none",
        "lifespan": "on",
        "proxy_headers": False,
        "server_header": False,
        "access_log": False,
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _WorkerServer(config=self.config)
        asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, server.handle_exit, signal.SIGQUIT, None)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


class _WorkerServer(Server):
    """A worker's uvicorn: any signal stops it as SIGTERM does (its requests finished, the
    application shut down, which writes what the audit queue holds; then it ends by SIGTERM),
    except a second SIGINT, which stops it at once as a second Ctrl-C stops uvicorn alone.
    uvicorn itself takes a SIGINT after any other signal as the second Ctrl-C, but one Ctrl-C in
    a terminal sends SIGINT to each worker and to the arbiter alike, and the arbiter's SIGQUIT
    may come before a worker's own SIGINT."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._interrupted = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGINT and self._interrupted:
            super().handle_exit(signal.SIGINT, frame)
            return
        self._interrupted = self._interrupted or sig == signal.SIGINT
        super().handle_exit(signal.SIGTERM, frame)


def _after_fork(_arbiter: Any, worker: Worker) -> None:
    """A connection opened before the fork would be shared by two processes; the parent opens
    none, and this makes sure of it."""
    worker.app.wsgi().state.ctx.engine.dispose(close=False)


class PreforkServer(BaseApplication):
    def __init__(
        self, settings: Settings, *, host: str, ports: list[int], workers: int, logging: dict[str, Any]
    ) -> None:
        self.settings = settings
        self.options = {
            "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for port in ports],
            "workers": workers,
            "worker_class": Worker,
            "preload_app": True,
            "post_fork": _after_fork,
            "keepalive": 5,
            "graceful_timeout": 20,
            "logconfig_dict": logging,
            "control_socket_disable": True,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Starlette:
        app = create_app(self.settings)
        gc.freeze()
        return app
