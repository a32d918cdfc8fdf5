"""JSON request bodies: read within the size limit, parsed strictly, checked against an operation's fields.

Every body the account API takes is one JSON object of strings, or of objects of strings (the
postal address), so a field is a name, a maximum length, whether it is required, and for an
object its own fields. The pipeline hands a handler its values as flat strings (:func:`members_of`
reads an object's back). The same :data:`Fields` an endpoint checks are what
the OpenAPI document publishes (:func:`json_schema`), so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from ..security.forms import MAX_BODY
from ..security.text import is_storable
from .problems import Problem

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Field:
    """A string member of a request body, or with ``members`` an object of string members (whose
    ``max_length`` is unused)."""

    max_length: int
    description: str
    required: bool = True
    members: Mapping[str, Field] | None = None


Fields = Mapping[str, Field]


def json_schema(fields: Fields, description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _property(field) for name, field in fields.items()},
    }
    if description is not None:
        schema["description"] = description
    required = [name for name, field in fields.items() if field.required]
    if required:
        schema["required"] = required
    return schema


def _property(field: Field) -> dict[str, Any]:
    if field.members is not None:
        return json_schema(field.members, field.description)
    return {"type": "string", "maxLength": field.max_length, "description": field.description}


def members_of(values: Mapping[str, str], name: str) -> dict[str, str] | None:
    """The members of the object ``name`` as they were sent, ``None`` when it was not: the values
    of an object come as ``<name>.<member>``, beside ``<name>`` itself, which says it was sent."""
    if name not in values:
        return None
    prefix = name + "."
    return {key.removeprefix(prefix): value for key, value in values.items() if key.startswith(prefix)}


async def read_limited(request: Request) -> bytes:
    """The raw body; raises a 413 :class:`Problem` as soon as it is known to be over the limit."""
    too_large = Problem("body-too-large", f"The request body may have at most {MAX_BODY} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise too_large
    return bytes(body)


def parse_json(request: Request, raw: bytes, fields: Fields) -> dict[str, str]:
    """The body's values by field name; raises a :class:`Problem` (415, 400 or 422) otherwise."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != JSON_TYPE:
        raise Problem("unsupported-media-type", f"Send the request body as {JSON_TYPE}.")
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members)
    except _UnnamableMember:
        raise Problem("malformed-body", "A member's name holds a NUL character or a lone surrogate.") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Problem("malformed-body", "The request body is not a well-formed JSON text in UTF-8.") from None
    return _check(document, fields)


class _DuplicateMember(ValueError):
    """An object names a member twice (RFC 8259 §4 leaves its meaning open: refuse it)."""


class _UnnamableMember(ValueError):
    """A member's name holds a NUL or a lone surrogate (JSON escapes allow both): no answer could
    name it in its pointer."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _DuplicateMember
    if not all(is_storable(name) for name in members):
        raise _UnnamableMember
    return members


def _pointer(name: str, within: str = "") -> str:
    """RFC 6901: a JSON Pointer to a member of the object ``within`` points to (the top level)."""
    return within + "/" + name.replace("~", "~0").replace("/", "~1")


def _check(document: Any, fields: Fields) -> dict[str, str]:
    """Each mistake becomes an entry of the problem's ``errors`` (RFC 9457 §3 example)."""
    if not isinstance(document, dict):
        shape = [{"pointer": "", "detail": "must be a JSON object"}]
        raise Problem("invalid-body", "The request body must be a JSON object.", extensions={"errors": shape})
    values: dict[str, str] = {}
    errors: list[dict[str, str]] = []
    _check_members(document, fields, "", values, errors)
    if errors:
        detail = "; ".join(f"{error['pointer']} {error['detail']}" for error in errors) + "."
        raise Problem("invalid-body", detail, extensions={"errors": errors})
    return values


def _check_members(
    document: dict[str, Any], fields: Fields, within: str, values: dict[str, str], errors: list[dict[str, str]]
) -> None:
    """Check the object ``within`` points to, adding its values (an inner object's as
    ``<name>.<member>``) and its mistakes."""
    errors.extend(
        {"pointer": _pointer(name, within), "detail": "is not a member this operation takes"}
        for name in sorted(document.keys() - fields.keys())
    )
    key_prefix = within[1:].replace("/", ".") + "." if within else ""
    for name, field in fields.items():
        pointer = _pointer(name, within)
        if name not in document:
            if field.required:
                errors.append({"pointer": pointer, "detail": "is required"})
            continue
        value = document[name]
        if field.members is not None:
            if not isinstance(value, dict):
                errors.append({"pointer": pointer, "detail": "must be a JSON object"})
            else:
                values[key_prefix + name] = ""
                _check_members(value, field.members, pointer, values, errors)
        elif not isinstance(value, str):
            errors.append({"pointer": pointer, "detail": "must be a string"})
        elif len(value) > field.max_length:
            errors.append({"pointer": pointer, "detail": f"must have at most {field.max_length} characters"})
        elif not is_storable(value):
            errors.append({"pointer": pointer, "detail": "must not hold NUL characters or lone surrogates"})
        else:
            values[key_prefix + name] = value
