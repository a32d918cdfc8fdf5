"""Reading request bodies with limits, so an oversized or malformed form is a clear 400."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from ..catalogs import N_
from .null_bytes import holds_nul

MAX_BODY = 64 * 1024
MAX_FIELDS = 100


class FormError(ValueError):
    """The body is too large, not a form, or not UTF-8."""


async def read_form(request: Request, *, require_form_type: bool = False) -> list[tuple[str, str]]:
    """The ``application/x-www-form-urlencoded`` body as ordered pairs, repeats kept."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        if require_form_type or content_type:
            raise FormError(N_("the body must be application/x-www-form-urlencoded"))
    declared = request.headers.get("content-length")
    if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY):
        raise FormError(N_("the request body is too large"))
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise FormError(N_("the request body is too large"))
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise FormError(N_("the form is malformed or has too many fields")) from None
    if any(holds_nul(key) or holds_nul(value) for key, value in pairs):
        raise FormError(N_("the form holds a NUL character"))
    return pairs


def given(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs that have a value: at OAuth endpoints a parameter sent without one counts as
    omitted (RFC 6749 §3.1 and §3.2), so ``scope=`` or ``client_secret=`` is not a value."""
    return [(key, value) for key, value in pairs if value]


def single_values(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], set[str]]:
    """Values by name, and the names sent more than once (RFC 6749 §3.1, §3.2)."""
    values: dict[str, str] = {}
    repeated: set[str] = set()
    for key, value in pairs:
        if key in values:
            repeated.add(key)
        values[key] = value
    return values, repeated
