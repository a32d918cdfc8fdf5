"""``idp clients create / list / show / update / rotate-secret / delete``."""

from __future__ import annotations

import argparse
from typing import Any

from ..accounts import sign_in_methods
from ..oauth.clients import (
    AUTH_METHODS,
    DEFAULT_SCOPE,
    GRANT_TYPES,
    LIFETIMES,
    ClientError,
    create_client,
    delete_client,
    find_client,
    list_clients,
    rotate_secret,
    update_client,
)
from ..settings import Settings
from ..storage import Client
from .context import as_operator, open_context, record_admin_action
from .output import emit

REFUSALS: tuple[type[Exception], ...] = (ClientError,)

LISTS = {"redirect_uris": "--redirect-uri", "post_logout_redirect_uris": "--post-logout-redirect-uri"}
"""The options given once for each value; ``update`` replaces the whole list when one is given."""
VALUES = ("name", "scope", "jwks_uri", "sign_in", "logo_uri", "policy_uri", "tos_uri")


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    create = actions.add_parser("create", help="register a client; prints its id and secret once")
    _registration_options(create, creating=True)
    create.set_defaults(run=create_command)
    update = actions.add_parser("update", help="change what the options name; a list given replaces the old one")
    update.add_argument("client_id")
    _registration_options(update, creating=False)
    update.set_defaults(run=update_command)
    actions.add_parser("list", help="every client, one JSON object a line").set_defaults(run=list_command)
    for name, run, text in (
        ("show", show_command, "one client's registration"),
        ("rotate-secret", rotate_command, "a new secret, printed once; the old one stops working at once"),
        ("delete", delete_command, "delete a client and everything issued to it"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("client_id")
        action.set_defaults(run=run)


def _registration_options(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    """The options of a registration: ``create``'s defaults, or none for ``update`` (unchanged)."""
    parser.add_argument("--name", required=creating)
    for dest, option in LISTS.items():
        parser.add_argument(option, action="append", default=[] if creating else None, dest=dest)
    parser.add_argument("--scope", default=DEFAULT_SCOPE if creating else None)
    parser.add_argument("--grant-type", action="append", choices=GRANT_TYPES, dest="grant_types")
    parser.add_argument(
        "--token-endpoint-auth-method",
        choices=AUTH_METHODS,
        dest="auth_method",
        help="the only method the client may use; without it, a secret sent in the Basic header or the body",
    )
    parser.add_argument("--jwks-uri")
    parser.add_argument(
        "--first-party",
        action="store_true" if creating else argparse.BooleanOptionalAction,
        default=False if creating else None,
        help="skip the consent screen",
    )
    parser.add_argument(
        "--web-origin",
        action="append",
        default=[] if creating else None,
        dest="web_origins",
        help="scheme://host[:port] of a browser app that may call the token, revocation and userinfo endpoints (CORS)",
    )
    parser.add_argument(
        "--sign-in",
        choices=sign_in_methods.CHOICES,
        default=sign_in_methods.PASSWORD if creating else None,
        help="what the sign-in leads with: the password page, or the code page (a login_hint gets its code at once)",
    )
    for option, what in (("--logo-uri", "logo"), ("--policy-uri", "privacy policy"), ("--tos-uri", "terms of service")):
        parser.add_argument(option, help=f"https URL of the client's {what}, shown on the sign-in and consent pages")
    for name, text in (
        ("access_token_ttl", "seconds; at most the server's IDP_ACCESS_TOKEN_TTL"),
        ("refresh_token_ttl", "seconds each refresh token lives (sliding); at most IDP_REFRESH_TOKEN_TTL"),
        ("refresh_token_absolute_ttl", "seconds after sign-in beyond which no refresh token of it is valid"),
    ):
        parser.add_argument("--" + name.replace("_", "-"), type=int, help=text)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """What the options gave, as :class:`~idp.oauth.clients.Registration` names it; for ``update``
    only what was given."""
    names = (*VALUES, *LISTS, "grant_types", "auth_method", "first_party", "web_origins")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    lifetimes = {name: getattr(args, name) for name in LIFETIMES if getattr(args, name) is not None}
    if lifetimes:
        given["lifetimes"] = lifetimes
    return given


def create_command(settings: Settings, args: argparse.Namespace) -> int:
    ctx = open_context(settings)
    with ctx.db.begin() as db:
        made = create_client(db, ctx.secret_key, allow_http=settings.issuer.startswith("http://"), **_given(args))
        output = {"client_id": made.client.id}
        if made.secret is not None:
            output["client_secret"] = made.secret
    emit(output)
    return 0


def update_command(settings: Settings, args: argparse.Namespace) -> int:
    given = _given(args)
    with open_context(settings).db.begin() as db:
        as_operator(db)
        if "lifetimes" in given:
            given["lifetimes"] = {**_lifetimes(find_client(db, args.client_id)), **given["lifetimes"]}
        client = update_client(db, args.client_id, given, allow_http=settings.issuer.startswith("http://"))
        record_admin_action(db, "clients update", list(given), client_id=client.id)
        output = described(client)
    emit(output)
    return 0


def rotate_command(settings: Settings, args: argparse.Namespace) -> int:
    ctx = open_context(settings)
    with ctx.db.begin() as db:
        as_operator(db)
        secret = rotate_secret(db, ctx.secret_key, args.client_id)
        record_admin_action(db, "clients rotate-secret", client_id=args.client_id)
    emit({"client_id": args.client_id, "client_secret": secret})
    return 0


def show_command(settings: Settings, args: argparse.Namespace) -> int:
    with open_context(settings).db() as db:
        emit(described(find_client(db, args.client_id)))
    return 0


def list_command(settings: Settings, _args: argparse.Namespace) -> int:
    with open_context(settings).db() as db:
        for client in list_clients(db):
            emit(described(client))
    return 0


def described(client: Client) -> dict[str, Any]:
    """What the commands print of a client: its registration, never its secret."""
    return {
        "client_id": client.id,
        "name": client.name,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "scope": client.scope,
        "grant_types": client.grant_types,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "auth_method_pinned": client.auth_method_pinned,
        "jwks_uri": client.jwks_uri,
        "first_party": client.first_party,
        "web_origins": client.web_origins,
        "sign_in": client.sign_in,
        "logo_uri": client.logo_uri,
        "policy_uri": client.policy_uri,
        "tos_uri": client.tos_uri,
        **_lifetimes(client),
    }


def _lifetimes(client: Client) -> dict[str, int | None]:
    return {name: getattr(client, name) for name in LIFETIMES}


def delete_command(settings: Settings, args: argparse.Namespace) -> int:
    with open_context(settings).db.begin() as db:
        as_operator(db)
        delete_client(db, args.client_id)
        record_admin_action(db, "clients delete", client_id=args.client_id)
    emit({"client_id": args.client_id, "deleted": True})
    return 0
