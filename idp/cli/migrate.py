"""``idp migrate``: upgrade the configured database to the newest schema."""

from __future__ import annotations

import argparse

from ..migrate import upgrade
from ..settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=run)


def run(settings: Settings, _args: argparse.Namespace) -> int:
    upgrade(settings.database_url)
    return 0
