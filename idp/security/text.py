"""Whether text a request carries can be kept: every database stores it and it encodes as UTF-8.

A form or a query string is decoded from UTF-8 bytes, which cannot yield a lone surrogate; a JSON
string can, by its ``\\ud800`` escapes, and then fails wherever it is encoded: in the database
driver, in orjson rendering an answer that names it."""

from __future__ import annotations

from .null_bytes import holds_nul


def is_storable(text: str) -> bool:
    """No NUL (PostgreSQL refuses it) and no lone surrogate (not encodable as UTF-8)."""
    if holds_nul(text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
