"""Reading the token request's parameters, as every grant does."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import InvalidRequest


def required(form: Mapping[str, str], name: str) -> str:
    """The parameter ``name``, or RFC 6749 §5.2 ``invalid_request``: an empty value is as absent
    (§3.2: parameters sent without a value are treated as omitted)."""
    value = form.get(name)
    if not value:
        raise InvalidRequest(f"{name} is required")
    return value
