"""``idp migrate``: upgrade the configured database to the newest schema."""

from __future__ import annotations

import argparse

from ..migrate import upgrade
from ..settings import Settings


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("migrate", help="upgrade the database schema to head")
    parser.set_defaults(run=run)


def run(settings: Settings, _args: argparse.Namespace) -> int:
    upgrade(settings.database_url)
    return 0
