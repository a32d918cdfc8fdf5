"""The ``idp`` command: one sub-command group per module.

Only the module of the group named on the command line is imported: ``idp serve`` should not wait
for what ``idp users`` needs (password hashing, phone numbers, the whole account layer) before it
starts. Bad input ends with one line on stderr and exit status 2, before anything is written; a
group names the errors of its own that count as bad input in ``REFUSALS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from ..keys import KeyStoreError
from ..observability.logs import configure_logging
from ..settings import Settings, SettingsError

GROUPS = {
    "serve": "run the provider",
    "migrate": "upgrade the database schema to head",
    "keys": "signing keys",
    "clients": "relying parties",
    "users": "people",
    "audit": "audit events as JSON lines, oldest first",
    "cleanup": "remove what has expired (idp serve also does it hourly)",
}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"idp: {message}\n")

    def _parse_optional(self, arg_string: str):  # type: ignore[no-untyped-def]
        """An argument that names no option of its command is a value: key ids and client ids are
        base64url, so one in 64 starts with "-" and must still reach ``retire`` or ``delete``."""
        name = arg_string.split("=", 1)[0]
        if arg_string != "--" and not any(option.startswith(name) for option in self._option_string_actions):
            return None
        return super()._parse_optional(arg_string)


def chosen_group(argv: Sequence[str]) -> ModuleType | None:
    """The module of the group the arguments name, if they name one."""
    name = next((arg for arg in argv if not arg.startswith("-")), None)
    return importlib.import_module(f"{__name__}.{name}") if name in GROUPS else None


def build_parser(group: ModuleType | None) -> argparse.ArgumentParser:
    parser = Parser(prog="idp", description="An OAuth 2.0 / OpenID Connect identity provider.")
    commands = parser.add_subparsers(dest="group", required=True, parser_class=Parser)
    for name, text in GROUPS.items():
        sub = commands.add_parser(name, help=text)
        if group is not None and group.__name__ == f"{__name__}.{name}":
            group.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    group = chosen_group(argv)
    args = build_parser(group).parse_args(argv)
    configure_logging(logging.WARNING)
    refusals = (SettingsError, KeyStoreError, *getattr(group, "REFUSALS", ()))
    try:
        settings = Settings.from_environ()
        return int(args.run(settings, args) or 0)
    except refusals as exc:
        print(f"idp: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
