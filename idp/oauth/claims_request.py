"""The ``claims`` request parameter (OpenID Connect Core §5.5): an app asks for claims by name, for
the ID token and for the UserInfo response apart, besides those its scopes release.

A request is checked once, at the authorization endpoint or the authorization challenge endpoint,
and kept in its checked form: with the pending request, the code, then the grant, so that every
token the grant issues (a refresh too) carries the same claims. Only claims the provider knows are
kept (§5.5: others are ignored), and of each only what the provider reads: ``essential``,
``value`` and ``values``. Two of them steer the sign-in itself (:func:`subject` and
:func:`required_acr`); the others are released when the person has a value for them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

from . import scopes
from .assurance import ACR_VALUES
from .errors import InvalidRequest

MAX_LENGTH = 4000
"""The most characters the parameter may have: a request for every claim, twice, fits in far fewer."""
TARGETS = ("userinfo", "id_token")
KNOWN = frozenset({*scopes.CLAIMS, "sub", "acr", "auth_time"})
"""The claims a request may name and be heard: the person's own, and those about the sign-in."""
MAX_VALUE = 256
"""The most characters a ``value`` (or one of ``values``) kept may have."""

ClaimsRequest = dict[str, dict[str, dict[str, Any] | None]]
"""What is kept: per target, each known claim asked for and what was said of it (``None``: nothing)."""


def parse(raw: str | None) -> ClaimsRequest | None:
    """The checked request, ``None`` when there is none; raises :class:`~.errors.InvalidRequest`
    with a description that says what is wrong for a parameter that is not JSON or not the shape
    §5.5 gives it."""
    if raw is None:
        return None
    if len(raw) > MAX_LENGTH:
        raise InvalidRequest(f"claims is longer than {MAX_LENGTH} characters")
    try:
        document = json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    except (ValueError, RecursionError):
        raise InvalidRequest("claims is not a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidRequest("claims is not a JSON object")
    checked: ClaimsRequest = {}
    for target in TARGETS:
        if target not in document:
            continue
        members = document[target]
        if not isinstance(members, dict):
            raise InvalidRequest(f"claims.{target} must be a JSON object")
        checked[target] = {name: _request(target, name, spec) for name, spec in members.items() if name in KNOWN}
    return checked


def _request(target: str, name: str, spec: object) -> dict[str, Any] | None:
    """One claim's request: ``null``, or an object whose ``essential`` is a boolean, ``value`` a
    string, number or boolean and ``values`` a list of them (§5.5.1); other members are ignored."""
    if spec is None:
        return None
    where = f"claims.{target}.{name}"
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{where} must be null or a JSON object")
    kept: dict[str, Any] = {}
    if "essential" in spec:
        if not isinstance(spec["essential"], bool):
            raise InvalidRequest(f"{where}.essential must be true or false")
        kept["essential"] = spec["essential"]
    if "value" in spec:
        kept["value"] = _plain(where + ".value", spec["value"])
        if name == "sub" and not isinstance(kept["value"], str):
            raise InvalidRequest(f"{where}.value must be a string: a sub is one (§5.1)")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise InvalidRequest(f"{where}.values must be a non-empty JSON array")
        kept["values"] = [_plain(where + ".values", value) for value in values]
    if "value" in kept and "values" in kept:
        raise InvalidRequest(f"{where} may have value or values, not both")
    return kept


def _not_a_number(constant: str) -> float:
    """``NaN`` and ``Infinity`` are not JSON (RFC 8259 §6), and no database column keeps them."""
    raise ValueError(constant)


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def _plain(where: str, value: object) -> str | int | float | bool:
    if not isinstance(value, str | int | float | bool) or (isinstance(value, str) and len(value) > MAX_VALUE):
        raise InvalidRequest(f"{where} must be a string of at most {MAX_VALUE} characters, a number or a boolean")
    return value


def within(request: ClaimsRequest | None, allowed_scopes: Collection[str]) -> ClaimsRequest | None:
    """Of the person's claims asked for, only those a scope the client may have releases: naming
    a claim asks for it as its scope would, never around what the client was registered for."""
    if not request:
        return request
    allowed = set(scopes.claims_of(set(allowed_scopes)))
    return {
        target: {name: spec for name, spec in members.items() if name not in scopes.CLAIMS or name in allowed}
        for target, members in request.items()
    }


def scopes_asked(request: ClaimsRequest | None) -> list[str]:
    """The scopes that release the person's claims asked for by name: what the person agrees to,
    on the consent page, when the app names them (OIDC Core §3.1.2.4)."""
    named = {name for members in (request or {}).values() for name in members if name in scopes.CLAIMS}
    return [scope for scope, released in scopes.RELEASED.items() if named & set(released)]


def asked(request: ClaimsRequest | None, target: str) -> list[str]:
    """The person's claims asked for by name for ``target`` (``id_token`` or ``userinfo``)."""
    if not request:
        return []
    return [name for name in request.get(target, {}) if name in scopes.CLAIMS]


def subject(request: ClaimsRequest | None) -> str | None:
    """The ``sub`` a request asks for by ``value`` (§5.5.1): the answer may only be about that
    person, whoever else is signed in. Raises :class:`~.errors.InvalidRequest` when the ID token
    and the UserInfo response ask for two different people."""
    named: set[str] = {
        spec["value"]
        for target in TARGETS
        if (spec := (request or {}).get(target, {}).get("sub")) is not None and "value" in spec
    }
    if len(named) > 1:
        raise InvalidRequest("claims asks for two different sub values")
    return named.pop() if named else None


def required_acr(request: ClaimsRequest | None) -> frozenset[str] | None:
    """The ``acr`` values one of which the sign-in must reach, when the ID token asks for ``acr``
    as an Essential Claim (§5.5.1.1); ``None`` when it does not insist. Values the provider does
    not know are no level it can reach: a request of only those cannot be met."""
    spec = (request or {}).get("id_token", {}).get("acr")
    if spec is None or not spec.get("essential"):
        return None
    wanted = spec.get("values", [spec["value"]] if "value" in spec else None)
    if wanted is None:
        return None
    return frozenset(str(value) for value in wanted) & frozenset(ACR_VALUES)
