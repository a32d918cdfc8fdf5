"""Registering relying parties, the rules their registered URIs and origins must follow, and
which client registered an origin."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import SplitResult, urlsplit

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from ..accounts import sign_in_methods
from ..security.digests import keyed_digest, new_token
from ..storage import Client, now
from ..storage.generations import Topic, bump
from . import scopes as scope_rules
from .errors import InvalidScope
from .grants.registry import GRANTS

GRANT_TYPES = tuple(GRANTS)
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
LIFETIMES = {
    "access_token_ttl": (60, 86_400),
    "refresh_token_ttl": (300, 31_536_000),
    "refresh_token_absolute_ttl": (300, 315_360_000),
}
"""The bounds of a client's own lifetimes, in seconds (those of the server's settings; a refresh
token family's absolute maximum up to ten years)."""
DEFAULT_SCOPE = "openid profile email phone offline_access"
MAX_URI_LENGTH = 2000
_LOOPBACK_IP_URI = re.compile(r"http://(127\.0\.0\.1|\[::1\])(?::([0-9]{1,5}))?([/?][^#]*)?")
MAX_ORIGIN_LENGTH = 300
DEFAULT_PORTS = {"http": 80, "https": 443}
_NOT_IN_URIS = frozenset('"<>\\^`{|}')
"""What RFC 3986 §2 leaves out of a URI: it appears only percent-encoded."""
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class ClientError(ValueError):
    """A client registration that cannot be accepted; the message says which value and why."""


@dataclass(frozen=True)
class NewClient:
    client: Client
    secret: str | None


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect_uri(uri: str, *, allow_http: bool, option: str = "--redirect-uri") -> str:
    """RFC 9700 §2.1 and §4.1: absolute, no fragment, https unless loopback or a native app's scheme."""
    if len(uri) > MAX_URI_LENGTH:
        raise ClientError(f"{option}: longer than {MAX_URI_LENGTH} characters")
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise ClientError(f"{option}: {uri!r} is not a URI") from None
    if not parts.scheme or any(c.isspace() for c in uri):
        raise ClientError(f"{option}: {uri!r} is not an absolute URI")
    if parts.fragment or "#" in uri:
        raise ClientError(f"{option}: {uri!r} must not have a fragment")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname and (allow_http or _is_loopback(parts.hostname)):
        return uri
    if parts.scheme not in ("http", "https", "javascript", "data", "file") and "." in parts.scheme:
        return uri
    raise ClientError(f"{option}: {uri!r} must be https (http only on loopback), or a private-use scheme")


def redirect_uri_registered(uri: str, client: Client) -> bool:
    """Character for character (RFC 9700 §2.1), except the port of a native app's loopback IP
    address: it listens on whatever port the system gives it, and RFC 8252 §7.3 says any port MUST
    be accepted there. A native app is a public client (RFC 8252 §8.4); a confidential web client
    keeps its registered port, so that its codes never go to another program on its host.
    ``localhost`` gets no such exception (RFC 8252 §8.3)."""
    registered = client.redirect_uris
    if uri in registered:
        return True
    if not client.is_public:
        return False
    presented = _loopback_without_port(uri)
    return presented is not None and any(_loopback_without_port(r) == presented for r in registered)


def _loopback_without_port(uri: str) -> tuple[str, str] | None:
    match = _LOOPBACK_IP_URI.fullmatch(uri)
    if match is None or int(match[2] or 80) > 65535:
        return None
    return match[1], match[3] or ""


def check_web_origin(origin: str, *, allow_http: bool, option: str = "--web-origin") -> str:
    """``origin`` as a browser sends it in its ``Origin`` header, or :class:`ClientError`.

    A browser serialises an origin as the HTML standard says (RFC 6454 §6.2): scheme and host in
    lowercase, the port only when it is not the scheme's default, nothing else. A registered origin
    is kept in that form, so that matching one is comparing two strings: ``HTTPS://App.Example:443``
    becomes ``https://app.example``. It must be https, or http where a redirect URI may be (a
    loopback host, or any host while the issuer itself is http); its host in ASCII (an
    international name in its ``xn--`` form); no path (not even ``/``), query, fragment or user.
    """
    shown = repr(origin)
    if len(origin) > MAX_ORIGIN_LENGTH:
        raise ClientError(f"{option}: longer than {MAX_ORIGIN_LENGTH} characters")
    if not origin.isascii():
        raise ClientError(f"{option}: {shown} must be in ASCII (an international host name in its xn-- form)")
    if any(c.isspace() or c in "?#\\@" for c in origin):
        raise ClientError(f"{option}: {shown} must be scheme://host[:port] and nothing more")
    parts, scheme, port = _web_url(origin, option)
    if parts.path:
        raise ClientError(f"{option}: {shown} must be scheme://host[:port], with no path, not even /")
    host = _origin_host(parts.hostname or "")
    if host is None:
        raise ClientError(f"{option}: {shown} has no valid host")
    if scheme == "http" and not (allow_http or _is_loopback(parts.hostname)):
        raise ClientError(f"{option}: {shown} must be https (http only on loopback)")
    if port == 0:
        raise ClientError(f"{option}: {shown} has an invalid port")
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _web_url(url: str, option: str) -> tuple[SplitResult, str, int | None]:
    """``url`` split, with its scheme in lowercase (http or https, as written) and its port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ClientError(f"{option}: {url!r} has an invalid host or port") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not url.lower().startswith(f"{scheme}://"):
        raise ClientError(f"{option}: {url!r} must start with https:// (http:// only on loopback)")
    return parts, scheme, port


def _origin_host(hostname: str) -> str | None:
    """A host as an origin shows it: a name in lowercase, an IPv6 address compressed in brackets."""
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return hostname if _HOSTNAME.fullmatch(hostname) else None
    return f"[{address.compressed}]" if address.version == 6 else str(address)


def check_branding_uri(uri: str, *, allow_http: bool, option: str) -> str:
    """A logo, policy or terms URL of RFC 7591 §2, which the sign-in and consent pages put in an
    ``<img src>`` or ``<a href>``: an absolute https URL (http where a redirect URI may be http),
    with a plain host, so that nothing but a web page or image can be behind it (no
    ``javascript:``, no ``data:``) and its origin can be named in the page's Content-Security-Policy.
    """
    shown = repr(uri)
    if len(uri) > MAX_URI_LENGTH:
        raise ClientError(f"{option}: longer than {MAX_URI_LENGTH} characters")
    if not uri.isascii() or any(not c.isprintable() or c.isspace() or c in _NOT_IN_URIS for c in uri):
        raise ClientError(f"{option}: {shown} is not a URL (spaces, quotes and <> must be percent-encoded)")
    parts, scheme, port = _web_url(uri, option)
    if scheme == "http" and not (allow_http or _is_loopback(parts.hostname)):
        raise ClientError(f"{option}: {shown} must be https (http only on loopback)")
    if "@" in parts.netloc or port == 0 or _origin_host(parts.hostname or "") is None:
        raise ClientError(f"{option}: {shown} has no valid host")
    return uri


def origin_of(uri: str) -> str:
    """The origin of a URL :func:`check_branding_uri` accepted, as a Content-Security-Policy names it."""
    parts = urlsplit(uri)
    return check_web_origin(f"{parts.scheme}://{parts.netloc}", allow_http=True)


def registered_origins(db: Session, client_id: str) -> list[str] | None:
    """The web origins of the client ``client_id``; ``None`` when there is no such client."""
    client = db.get(Client, client_id)
    return None if client is None else client.web_origins


def any_client_registers_origin(db: Session, origin: str) -> bool:
    """Whether some client registered ``origin``: the database narrows the clients down to those
    whose list mentions it as text (alike on SQLite and PostgreSQL), and the list decides."""
    if len(origin) > MAX_ORIGIN_LENGTH:
        return False
    mentioning = select(Client.web_origins).where(cast(Client.web_origins, String).contains(origin, autoescape=True))
    return any(origin in origins for origins in db.scalars(mentioning))


@dataclass(frozen=True)
class Registration:
    """What ``idp clients create`` registers, or ``update`` changes, before it is checked. Without an
    ``auth_method`` the client gets a secret that it may send in the Basic header or the body."""

    name: str
    redirect_uris: Sequence[str]
    post_logout_redirect_uris: Sequence[str] = ()
    scope: str = DEFAULT_SCOPE
    grant_types: Sequence[str] | None = None
    auth_method: str | None = None
    jwks_uri: str | None = None
    first_party: bool = False
    web_origins: Sequence[str] = ()
    sign_in: str = sign_in_methods.PASSWORD
    logo_uri: str | None = None
    policy_uri: str | None = None
    tos_uri: str | None = None
    lifetimes: Mapping[str, int | None] = field(default_factory=dict)

    @classmethod
    def of(cls, client: Client) -> Registration:
        return cls(
            name=client.name,
            redirect_uris=client.redirect_uris,
            post_logout_redirect_uris=client.post_logout_redirect_uris,
            scope=client.scope,
            grant_types=client.grant_types,
            auth_method=client.token_endpoint_auth_method if client.auth_method_pinned else None,
            jwks_uri=client.jwks_uri,
            first_party=client.first_party,
            web_origins=client.web_origins,
            sign_in=client.sign_in,
            logo_uri=client.logo_uri,
            policy_uri=client.policy_uri,
            tos_uri=client.tos_uri,
            lifetimes={name: getattr(client, name) for name in LIFETIMES},
        )


def create_client(db: Session, secret_key: str, *, allow_http: bool = False, **given: Any) -> NewClient:
    """Check everything first and write one row, so bad input leaves nothing behind; ``given`` as
    :class:`Registration`."""
    columns = _columns(Registration(**given), allow_http=allow_http)
    secret = new_token() if columns["token_endpoint_auth_method"] in SECRET_METHODS else None
    client = Client(
        id=new_token()[:32],
        secret_hash=keyed_digest(secret_key, secret) if secret else None,
        created_at=now(),
        **columns,
    )
    db.add(client)
    db.flush()
    return NewClient(client=client, secret=secret)


def update_client(db: Session, client_id: str, changes: Mapping[str, Any], *, allow_http: bool = False) -> Client:
    """Change what ``changes`` names (as :class:`Registration`), checked as a new registration
    would be; the secret stays (``rotate_secret`` replaces it), so a client that has one keeps a
    method that sends one, and one without gets none."""
    client = find_client(db, client_id)
    columns = _columns(replace(Registration.of(client), **changes), allow_http=allow_http)
    had_secret = client.token_endpoint_auth_method in SECRET_METHODS
    if (columns["token_endpoint_auth_method"] in SECRET_METHODS) != had_secret:
        raise ClientError("--token-endpoint-auth-method: a client keeps whether it has a secret; register a new one")
    for name, value in columns.items():
        setattr(client, name, value)
    db.flush()
    bump(db, Topic.CLIENTS)
    return client


def rotate_secret(db: Session, secret_key: str, client_id: str) -> str:
    """A new secret for the client, shown once; the old one stops working at once."""
    client = find_client(db, client_id)
    if client.token_endpoint_auth_method not in SECRET_METHODS:
        raise ClientError(f"client {client_id} authenticates without a secret ({client.token_endpoint_auth_method})")
    secret = new_token()
    client.secret_hash = keyed_digest(secret_key, secret)
    bump(db, Topic.CLIENTS)
    return secret


def find_client(db: Session, client_id: str) -> Client:
    """The client with this id, or a :class:`ClientError` that names it."""
    client = db.get(Client, client_id) if len(client_id) <= 64 else None
    if client is None:
        raise ClientError(f"no client with id {client_id}")
    return client


def _columns(registration: Registration, *, allow_http: bool) -> dict[str, Any]:
    """The client's columns for ``registration``, every value checked."""
    r = registration
    auth_method = r.auth_method or "client_secret_basic"
    name = r.name.strip()
    if not name or len(name) > 200:
        raise ClientError("--name: must be 1 to 200 characters")
    grant_types = list(dict.fromkeys(r.grant_types or ["authorization_code", "refresh_token"]))
    for grant in grant_types:
        if grant not in GRANT_TYPES:
            raise ClientError(f"--grant-type: {grant!r} is not one of {', '.join(GRANT_TYPES)}")
    if auth_method not in AUTH_METHODS:
        raise ClientError(f"--token-endpoint-auth-method: {auth_method!r} is not one of {', '.join(AUTH_METHODS)}")
    if r.sign_in not in sign_in_methods.CHOICES:
        raise ClientError(f"--sign-in: {r.sign_in!r} is not one of {', '.join(sign_in_methods.CHOICES)}")
    if auth_method == "none" and "client_credentials" in grant_types:
        raise ClientError("--grant-type: client_credentials needs a confidential client, not auth method none")
    if "authorization_code" in grant_types and not r.redirect_uris:
        raise ClientError("--redirect-uri: the authorization_code grant needs at least one")
    try:
        scopes = scope_rules.parse(r.scope)
    except InvalidScope as exc:
        raise ClientError(f"--scope: {exc.description}") from None
    if not scopes:
        raise ClientError("--scope: must name at least one scope")
    if auth_method == "private_key_jwt":
        if r.jwks_uri is None:
            raise ClientError("--jwks-uri: private_key_jwt needs the URL of the client's JWKS")
        check_redirect_uri(r.jwks_uri, allow_http=allow_http, option="--jwks-uri")
    elif r.jwks_uri is not None:
        raise ClientError("--jwks-uri: only private_key_jwt clients use a JWKS")
    branding = {
        column: None if uri is None else check_branding_uri(uri, allow_http=allow_http, option=option)
        for column, option, uri in (
            ("logo_uri", "--logo-uri", r.logo_uri),
            ("policy_uri", "--policy-uri", r.policy_uri),
            ("tos_uri", "--tos-uri", r.tos_uri),
        )
    }
    return {
        "name": name,
        "redirect_uris": [check_redirect_uri(u, allow_http=allow_http) for u in dict.fromkeys(r.redirect_uris)],
        "post_logout_redirect_uris": [
            check_redirect_uri(u, allow_http=allow_http, option="--post-logout-redirect-uri")
            for u in dict.fromkeys(r.post_logout_redirect_uris)
        ],
        "scope": " ".join(scopes),
        "grant_types": grant_types,
        "token_endpoint_auth_method": auth_method,
        "auth_method_pinned": r.auth_method is not None,
        "jwks_uri": r.jwks_uri,
        "first_party": r.first_party,
        "web_origins": list(dict.fromkeys(check_web_origin(o, allow_http=allow_http) for o in r.web_origins)),
        "sign_in": r.sign_in,
        **branding,
        **dict.fromkeys(LIFETIMES),
        **check_lifetimes(r.lifetimes),
    }


def check_lifetimes(lifetimes: Mapping[str, int | None]) -> dict[str, int]:
    """The lifetimes given (``--access-token-ttl`` ...), each within :data:`LIFETIMES`."""
    checked = {}
    for name, value in lifetimes.items():
        if value is None:
            continue
        low, high = LIFETIMES[name]
        if not low <= value <= high:
            raise ClientError(f"--{name.replace('_', '-')}: must be {low} to {high} seconds")
        checked[name] = value
    return checked


def list_clients(db: Session) -> list[Client]:
    return list(db.scalars(select(Client).order_by(Client.created_at, Client.id)))


def delete_client(db: Session, client_id: str) -> None:
    """The client goes, and its grants with it: both kinds of change are made known."""
    db.delete(find_client(db, client_id))
    bump(db, Topic.CLIENTS)
    bump(db, Topic.REVOCATIONS)
