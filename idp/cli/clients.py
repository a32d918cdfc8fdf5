"""``idp clients create / list / delete``."""

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
    list_clients,
)
from ..settings import Settings
from ..storage import Client
from .context import open_context
from .output import emit

REFUSALS: tuple[type[Exception], ...] = (ClientError,)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    create = actions.add_parser("create", help="register a client; prints its id and secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--redirect-uri", action="append", default=[], dest="redirect_uris")
    create.add_argument("--post-logout-redirect-uri", action="append", default=[], dest="post_logout_redirect_uris")
    create.add_argument("--scope", default=DEFAULT_SCOPE)
    create.add_argument("--grant-type", action="append", choices=GRANT_TYPES, dest="grant_types")
    create.add_argument(
        "--token-endpoint-auth-method",
        choices=AUTH_METHODS,
        help="the only method the client may use; without it, a secret sent in the Basic header or the body",
    )
    create.add_argument("--jwks-uri")
    create.add_argument("--first-party", action="store_true", help="skip the consent screen")
    create.add_argument(
        "--web-origin",
        action="append",
        default=[],
        dest="web_origins",
        help="scheme://host[:port] of a browser app that may call the token, revocation and userinfo endpoints (CORS)",
    )
    create.add_argument(
        "--sign-in",
        choices=sign_in_methods.CHOICES,
        default=sign_in_methods.PASSWORD,
        help="what the sign-in leads with: the password page, or the code page (a login_hint gets its code at once)",
    )
    create.add_argument("--logo-uri", help="https URL of the client's logo, shown on the sign-in and consent pages")
    create.add_argument("--policy-uri", help="https URL of the client's privacy policy, linked from those pages")
    create.add_argument("--tos-uri", help="https URL of the client's terms of service, linked from those pages")
    create.add_argument("--access-token-ttl", type=int, help="seconds; at most the server's IDP_ACCESS_TOKEN_TTL")
    create.add_argument(
        "--refresh-token-ttl",
        type=int,
        help="seconds each refresh token lives (sliding); at most IDP_REFRESH_TOKEN_TTL",
    )
    create.add_argument(
        "--refresh-token-absolute-ttl",
        type=int,
        help="seconds after sign-in beyond which no refresh token of the sign-in is valid, however often refreshed",
    )
    create.set_defaults(run=create_command)
    actions.add_parser("list", help="every client, one JSON object a line").set_defaults(run=list_command)
    delete = actions.add_parser("delete", help="delete a client and everything issued to it")
    delete.add_argument("client_id")
    delete.set_defaults(run=delete_command)


def create_command(settings: Settings, args: argparse.Namespace) -> int:
    ctx = open_context(settings)
    with ctx.db.begin() as db:
        made = create_client(
            db,
            ctx.secret_key,
            name=args.name,
            redirect_uris=args.redirect_uris,
            post_logout_redirect_uris=args.post_logout_redirect_uris,
            scope=args.scope,
            grant_types=args.grant_types,
            auth_method=args.token_endpoint_auth_method,
            jwks_uri=args.jwks_uri,
            first_party=args.first_party,
            web_origins=args.web_origins,
            sign_in=args.sign_in,
            logo_uri=args.logo_uri,
            policy_uri=args.policy_uri,
            tos_uri=args.tos_uri,
            lifetimes={name: getattr(args, name) for name in LIFETIMES},
            allow_http=settings.issuer.startswith("http://"),
        )
        output = {"client_id": made.client.id}
        if made.secret is not None:
            output["client_secret"] = made.secret
    emit(output)
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
        **{name: getattr(client, name) for name in LIFETIMES},
    }


def delete_command(settings: Settings, args: argparse.Namespace) -> int:
    ctx = open_context(settings)
    with ctx.db.begin() as db:
        delete_client(db, args.client_id)
    emit({"client_id": args.client_id, "deleted": True})
    return 0
