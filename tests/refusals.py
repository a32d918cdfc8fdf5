"""Asserting an account service's refusal as the person reads it: the error of the family in
:mod:`idp.accounts.errors`, put into words by the table every surface shares."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from idp.accounts.errors import AccountError
from idp.web.messages import message


@contextmanager
def refused_saying(kind: type[AccountError], pattern: str) -> Iterator[None]:
    """The block raises ``kind``, and its sentence matches ``pattern`` (``re.search``)."""
    with pytest.raises(kind) as raised:
        yield
    said = message(raised.value)
    assert re.search(pattern, said), said
