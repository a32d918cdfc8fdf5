"""``idp users create / list / search / show / update / unlock / disable / enable / delete / reset-link /
sessions / grants / import / export``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from .. import audit
from ..accounts import administration
from ..accounts.deletion import delete_account
from ..accounts.exports import export_people
from ..accounts.imports import Summary, import_people
from ..accounts.legacy_hashes import cost_class_decoys
from ..accounts.personal_data import personal_data
from ..accounts.users import UserError, create_user, disable_user, list_users, lock_user, unlock_user
from ..audit import Event
from ..settings import Settings
from ..storage import User, now
from .context import as_operator, open_context, record_admin_action
from .output import emit

# Read from standard input this many bytes at most: a password is at most 256 characters.
MAX_PASSWORD_LINE = 4096
FROM_STANDARD_INPUT = "-"


class PasswordInputError(ValueError):
    """``--password -`` found no usable password on standard input."""


class ImportFileError(ValueError):
    """The file to import cannot be read at all."""


REFUSALS: tuple[type[Exception], ...] = (UserError, PasswordInputError, ImportFileError)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    create = actions.add_parser("create", help="make an account with an email, a phone or both; prints its id")
    create.add_argument("--email")
    create.add_argument(
        "--password",
        help="the password; - reads it from standard input (asked twice on a terminal) so that it "
        "stays out of the command line; without it the account is passwordless",
    )
    create.add_argument("--phone", help="in E.164 (+4915112345678), or national with IDP_PHONE_DEFAULT_REGION")
    create.add_argument("--name")
    _profile_options(create)
    create.add_argument("--verified", action="store_true", help="mark the email (and phone) verified")
    create.set_defaults(run=create_command)
    actions.add_parser("list", help="every account, one JSON object a line").set_defaults(run=list_command)
    import_ = actions.add_parser(
        "import", help="people from JSON lines (README: Moving from Django); prints what it did as JSON"
    )
    import_.add_argument("file")
    import_.add_argument("--dry-run", action="store_true", help="check and count every line, write nothing")
    import_.set_defaults(run=import_command)
    export = actions.add_parser("export", help="every person as a JSON line that import reads, hashes included")
    export.set_defaults(run=export_command)
    for name, act, done, text in (
        ("unlock", unlock_user, "unlocked", "end a lockout"),
        ("disable", disable_user, "disabled", "disable an account and end its sessions and grants"),
        ("enable", administration.enable_user, "enabled", "let a disabled account sign in again"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("user_id")
        action.set_defaults(run=act_command, act=act, done=done)
    show = actions.add_parser("show", help="everything held about a person, as the person would download it")
    show.add_argument("user_id")
    show.set_defaults(run=show_command)
    delete = actions.add_parser("delete", help="delete an account: its sessions end, its grants and tokens die")
    delete.add_argument("user_id")
    delete.set_defaults(run=delete_command)
    search = actions.add_parser(
        "search", help="people whose id is TEXT or whose address, number, names or username hold it"
    )
    search.add_argument("text")
    search.set_defaults(run=search_command)
    update = actions.add_parser(
        "update", help="change what the options name (an empty value removes it); prints the person"
    )
    update.add_argument("user_id")
    for option in ("--email", "--phone", "--name"):
        update.add_argument(option)
    _profile_options(update)
    update.add_argument("--no-groups", action="store_const", const=[], dest="groups", help="in no group")
    for flag in ("--email-verified", "--phone-verified"):
        update.add_argument(flag, action=argparse.BooleanOptionalAction)
    update.set_defaults(run=update_command)
    reset = actions.add_parser("reset-link", help="print a one-time link to set a new password (an hour)")
    reset.add_argument("user_id")
    reset.set_defaults(run=reset_link_command)
    sessions = actions.add_parser("sessions", help="the person's live sessions, or end some or all")
    sessions.add_argument("user_id")
    sessions.add_argument("--end", action="append", default=[], metavar="SESSION_ID")
    sessions.add_argument("--end-all", action="store_true")
    sessions.set_defaults(run=sessions_command)
    grants = actions.add_parser("grants", help="what the person granted applications, or revoke some or all")
    grants.add_argument("user_id")
    grants.add_argument("--revoke", action="append", default=[], metavar="GRANT_ID")
    grants.add_argument("--revoke-all", action="store_true")
    grants.set_defaults(run=grants_command)


def _profile_options(parser: argparse.ArgumentParser) -> None:
    """The options ``create`` and ``update`` share (:data:`PROFILE`), so that an operator makes an
    account with everything they could later change, each value checked by the same code."""
    for option in ("--given-name", "--family-name", "--username"):
        parser.add_argument(option)
    parser.add_argument(
        "--locale",
        metavar="TAG",
        help="the language of the person's pages and messages: one idp has a catalog for, like fa",
    )
    parser.add_argument("--zoneinfo", metavar="ZONE", help="an IANA time zone, like Europe/Berlin")
    parser.add_argument("--picture", metavar="URL", help="the https URL of the person's picture")
    parser.add_argument(
        "--address",
        metavar="JSON",
        help='the postal address as import lines have it, replacing the one kept: {"street_address": ..., '
        '"locality": ..., "region": ..., "postal_code": ..., "country": ...}; {} removes it',
    )
    parser.add_argument(
        "--group", action="append", dest="groups", metavar="GROUP", help="the person's groups, all of them (repeat it)"
    )


PROFILE = {
    "given_name": "given_name",
    "family_name": "family_name",
    "username": "preferred_username",
    "locale": "locale",
    "zoneinfo": "zoneinfo",
    "picture": "picture",
    "address": "address",
    "groups": "groups",
}
"""Each option :func:`_profile_options` adds and what it sets; an empty value removes it."""
CREATE_OPTIONS = ("email", "password", "phone", "name", "verified", *PROFILE)


def _changes(args: argparse.Namespace, options: dict[str, str]) -> dict[str, Any]:
    """What the given ``options`` set, as :func:`~..accounts.administration.update_person` takes it."""
    return {column: getattr(args, option) for option, column in options.items() if getattr(args, option) is not None}


def create_command(settings: Settings, args: argparse.Namespace) -> int:
    """The profile beyond the sign-in details is set as ``users update`` sets it, in the same
    transaction: a refused value leaves no account behind."""
    if args.email is None and args.phone is None:
        raise UserError("--email, --phone or both: an account needs an email address or a phone number")
    password = read_password() if args.password == FROM_STANDARD_INPUT else args.password
    ctx = open_context(settings)
    with ctx.db.begin() as db:
        as_operator(db)
        user = create_user(
            db,
            email=args.email,
            password=password,
            phone=args.phone,
            name=args.name,
            verified=args.verified,
            phone_region=settings.phone_default_region,
        )
        profile = _changes(args, PROFILE)
        if profile:
            administration.update_person(db, settings, user.id, profile)
        given = [option for option in CREATE_OPTIONS if getattr(args, option) not in (None, False)]
        record_admin_action(db, "users create", given, user_id=user.id)
        output = {"id": user.id}
    emit(output)
    return 0


def list_command(settings: Settings, _args: argparse.Namespace) -> int:
    with open_context(settings).db() as db:
        for user in list_users(db):
            emit(described(user))
    return 0


def import_command(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status 2 when any line was refused (each named on stderr), the good ones imported.
    A run that writes is audited once, with its counts: one event a line would bury the rest of
    the trail under a migration, and each person's line is in the file the operator kept. A dry
    run writes nothing, and is not audited."""
    try:
        lines = open(args.file, "rb")
    except OSError as exc:
        raise ImportFileError(f"cannot read {args.file}: {exc.strerror}") from None
    with lines:
        ctx = open_context(settings)
        summary = import_people(
            ctx.db, lines, dry_run=args.dry_run, refuse=_refused, progress=_progress if sys.stderr.isatty() else None
        )
    if sys.stderr.isatty():
        sys.stderr.write("\n")
        with ctx.db() as db:
            _tell_cost_classes(set(cost_class_decoys(db)) | summary.new_cost_classes, dry_run=args.dry_run)
    counts = {"imported": summary.imported, "unchanged": summary.unchanged, "failed": summary.failed}
    if not args.dry_run:
        with ctx.db.begin() as db:
            as_operator(db)
            record_admin_action(db, "users import", counts=counts)
    emit(counts)
    return 2 if summary.failed else 0


def _refused(number: int, why: str) -> None:
    sys.stderr.write(f"line {number}: {why}\n")


def _progress(summary: Summary) -> None:
    counts = f"{summary.imported} imported, {summary.unchanged} unchanged, {summary.failed} failed"
    sys.stderr.write(f"\r{summary.imported + summary.unchanged + summary.failed} lines: {counts}")
    sys.stderr.flush()


def _tell_cost_classes(classes: set[str], *, dry_run: bool) -> None:
    """What a password sign-in costs now, or would after a dry run's import, on a terminal
    (stdout's summary is a script's): each cost class of imported hashes kept adds a verification
    of its work to every sign-in."""
    if classes:
        verifies = "would verify" if dry_run else "verifies"
        sys.stderr.write(
            f"each password sign-in {verifies} one argon2 hash and one hash of each cost class kept from"
            f" imports ({len(classes)}, until nobody keeps a hash of one): {', '.join(sorted(classes))}\n"
        )


def export_command(settings: Settings, _args: argparse.Namespace) -> int:
    for line in export_people(open_context(settings).db):
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0


def described(user: User) -> dict[str, Any]:
    """What the commands print of a person: never a password hash or a second factor's secret."""
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "phone": user.phone,
        "phone_verified": user.phone_verified,
        "name": user.name,
        "disabled": user.disabled,
        "locked": user.locked_until is not None,
    }


def show_command(settings: Settings, args: argparse.Namespace) -> int:
    """The person's data export; that an operator read it is audited."""
    with open_context(settings).db.begin() as db:
        as_operator(db)
        user = db.get(User, args.user_id) if len(args.user_id) <= 64 else None
        if user is None:
            raise UserError(f"no user with id {args.user_id}")
        data = personal_data(db, user, now())
        audit.record(db, Event.PERSONAL_DATA_EXPORTED, outcome="success", user_id=user.id, detail={"by": "operator"})
    emit(data)
    return 0


def delete_command(settings: Settings, args: argparse.Namespace) -> int:
    ctx = open_context(settings)
    with ctx.db.begin() as db:
        as_operator(db)
        user = lock_user(db, args.user_id) if len(args.user_id) <= 64 else None
        if user is None:
            raise UserError(f"no user with id {args.user_id}")
        delete_account(ctx, db, user, by="operator")
    emit({"id": args.user_id, "deleted": True})
    return 0


def act_command(settings: Settings, args: argparse.Namespace) -> int:
    """One change to one person (``args.act``), printed as the state it leaves (``args.done``)."""
    with open_context(settings).db.begin() as db:
        as_operator(db)
        args.act(db, args.user_id)
        record_admin_action(db, f"users {args.action}", user_id=args.user_id)
    emit({"id": args.user_id, args.done: True})
    return 0


def read_password() -> str:
    """The password for ``--password -``: asked twice without echo on a terminal, so that a typo
    does not lock its owner out; else the first line of standard input, for scripts and secret
    stores (``vault read ... | idp users create --password -``)."""
    if sys.stdin.isatty():
        try:
            first = getpass.getpass("Password: ")
            second = getpass.getpass("Password (again): ")
        except EOFError:
            raise PasswordInputError("--password -: no password was typed") from None
        if first != second:
            raise PasswordInputError("--password -: the two passwords do not match")
        return first
    line = sys.stdin.buffer.readline(MAX_PASSWORD_LINE)
    try:
        password = line.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise PasswordInputError("--password -: standard input is not UTF-8") from None
    if not password:
        raise PasswordInputError("--password -: standard input held no password on its first line")
    return password


UPDATES = {
    "email": "email",
    "phone": "phone",
    "name": "name",
    **PROFILE,
    "email_verified": "email_verified",
    "phone_verified": "phone_verified",
}
"""Each option of ``users update`` and what it changes."""


def search_command(settings: Settings, args: argparse.Namespace) -> int:
    with open_context(settings).db() as db:
        for user in administration.search_users(db, args.text):
            emit(described(user))
    return 0


def update_command(settings: Settings, args: argparse.Namespace) -> int:
    changes = _changes(args, UPDATES)
    if not changes:
        raise UserError("users update: name at least one thing to change (--email, --phone, --name ...)")
    with open_context(settings).db.begin() as db:
        as_operator(db)
        user = administration.update_person(db, settings, args.user_id, changes)
        record_admin_action(db, "users update", list(changes), user_id=user.id)
        output = described(user) | {
            "given_name": user.given_name,
            "family_name": user.family_name,
            "preferred_username": user.preferred_username,
            "locale": user.locale,
            "zoneinfo": user.zoneinfo,
            "picture": user.picture,
            "address": user.address,
        }
    emit(output)
    return 0


def reset_link_command(settings: Settings, args: argparse.Namespace) -> int:
    with open_context(settings).db.begin() as db:
        as_operator(db)
        link = administration.reset_link(db, settings, args.user_id)
        record_admin_action(db, "users reset-link", user_id=args.user_id)
    emit({"id": args.user_id, "reset_link": link})
    return 0


def sessions_command(settings: Settings, args: argparse.Namespace) -> int:
    with open_context(settings).db.begin() as db:
        if args.end or args.end_all:
            as_operator(db)
            ended = administration.end_sessions(db, args.user_id, args.end)
            record_admin_action(db, "users sessions --end", user_id=args.user_id)
            emit({"id": args.user_id, "ended": ended})
            return 0
        for session in administration.live_sessions(db, args.user_id):
            emit(
                {
                    "id": session.id,
                    "created_at": session.created_at,
                    "last_seen_at": session.last_seen_at,
                    "expires_at": session.expires_at,
                    "ip": session.ip,
                    "user_agent": session.user_agent,
                }
            )
    return 0


def grants_command(settings: Settings, args: argparse.Namespace) -> int:
    with open_context(settings).db.begin() as db:
        if args.revoke or args.revoke_all:
            as_operator(db)
            revoked = administration.revoke_person_grants(db, args.user_id, args.revoke)
            record_admin_action(db, "users grants --revoke", user_id=args.user_id)
            emit({"id": args.user_id, "revoked": revoked})
            return 0
        for grant in administration.grants_of(db, args.user_id):
            emit(
                {
                    "id": grant.id,
                    "client_id": grant.client_id,
                    "scope": grant.scope,
                    "created_at": grant.created_at,
                    "revoked_at": grant.revoked_at,
                }
            )
    return 0
