"""``idp cleanup``: remove expired codes, tokens, sessions, delivered messages, old audit events and
registrations nobody proved."""

from __future__ import annotations

import argparse

from ..housekeeping import cleanup
from ..settings import Settings
from .context import open_context
from .output import emit


def configure(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=run)


def run(settings: Settings, _args: argparse.Namespace) -> int:
    ctx = open_context(settings)
    with ctx.db.begin() as db:
        removed = cleanup(db, settings)
    emit({"removed": removed})
    return 0
