"""The ``idp`` command: one sub-command group per module.

Bad input ends with one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..accounts.users import UserError
from ..keys import KeyStoreError
from ..oauth.clients import ClientError
from ..observability.logs import configure_logging
from ..settings import Settings, SettingsError
from . import audit, cleanup, clients, keys, migrate, serve, users

GROUPS = (serve, migrate, keys, clients, users, audit, cleanup)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"idp: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="idp", description="An OAuth 2.0 / OpenID Connect identity provider.")
    commands = parser.add_subparsers(dest="group", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.WARNING)
    try:
        settings = Settings.from_environ()
        return int(args.run(settings, args) or 0)
    except (SettingsError, ClientError, UserError, KeyStoreError) as exc:
        print(f"idp: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
