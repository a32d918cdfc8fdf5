"""``idp users create / list / unlock / disable``."""

from __future__ import annotations

import argparse

from ..accounts.users import UserError, create_user, disable_user, list_users, unlock_user
from ..settings import Settings
from .clients import _context
from .output import emit

REFUSALS: tuple[type[Exception], ...] = (UserError,)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    create = actions.add_parser("create", help="make an account; prints its id")
    create.add_argument("--email", required=True)
    create.add_argument("--password")
    create.add_argument("--phone")
    create.add_argument("--name")
    create.add_argument("--verified", action="store_true", help="mark the email (and phone) verified")
    create.set_defaults(run=create_command)
    actions.add_parser("list", help="every account, one JSON object a line").set_defaults(run=list_command)
    for name, run, text in (
        ("unlock", unlock_command, "end a lockout"),
        ("disable", disable_command, "disable an account and end its sessions and grants"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("user_id")
        action.set_defaults(run=run)


def create_command(settings: Settings, args: argparse.Namespace) -> int:
    ctx = _context(settings)
    with ctx.sessions.begin() as db:
        user = create_user(
            db,
            email=args.email,
            password=args.password,
            phone=args.phone,
            name=args.name,
            verified=args.verified,
            phone_region=settings.phone_default_region,
        )
        output = {"id": user.id}
    emit(output)
    return 0


def list_command(settings: Settings, _args: argparse.Namespace) -> int:
    ctx = _context(settings)
    with ctx.sessions() as db:
        for user in list_users(db):
            emit(
                {
                    "id": user.id,
                    "email": user.email,
                    "email_verified": user.email_verified,
                    "phone": user.phone,
                    "phone_verified": user.phone_verified,
                    "name": user.name,
                    "disabled": user.disabled,
                    "locked": user.locked_until is not None,
                }
            )
    return 0


def unlock_command(settings: Settings, args: argparse.Namespace) -> int:
    ctx = _context(settings)
    with ctx.sessions.begin() as db:
        unlock_user(db, args.user_id)
    emit({"id": args.user_id, "unlocked": True})
    return 0


def disable_command(settings: Settings, args: argparse.Namespace) -> int:
    ctx = _context(settings)
    with ctx.sessions.begin() as db:
        disable_user(db, args.user_id)
    emit({"id": args.user_id, "disabled": True})
    return 0
