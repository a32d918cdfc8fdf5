"""``idp keys list / rotate / retire KID``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ..keys import KeyStore
from ..settings import Settings
from .output import emit


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    actions.add_parser("list", help="every published key, the active one last").set_defaults(run=list_keys)
    actions.add_parser("rotate", help="make a new active key; older keys stay published").set_defaults(run=rotate)
    retire_parser = actions.add_parser("retire", help="drop a key from the JWKS")
    retire_parser.add_argument("kid")
    retire_parser.add_argument(
        "--force", action="store_true", help="retire even if tokens it signed may still be valid (a leaked key)"
    )
    retire_parser.set_defaults(run=retire)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def list_keys(settings: Settings, _args: argparse.Namespace) -> int:
    keys = KeyStore(settings.keys_dir).load()
    for index, key in enumerate(keys):
        emit({"kid": key.kid, "created_at": _when(key.created_at), "active": index == len(keys) - 1})
    return 0


def rotate(settings: Settings, _args: argparse.Namespace) -> int:
    key = KeyStore(settings.keys_dir).rotate()
    emit({"kid": key.kid, "created_at": _when(key.created_at), "active": True})
    return 0


def retire(settings: Settings, args: argparse.Namespace) -> int:
    key = KeyStore(settings.keys_dir).retire(args.kid, published_for=settings.max_signed_token_ttl, force=args.force)
    emit({"kid": key.kid, "retired": True})
    return 0
