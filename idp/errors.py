"""The root of every error family a request's handler may raise to refuse what it was asked.

The request pipeline (:mod:`idp.web.pipeline`) owns the request's one unit of work: on a refusal it
rolls back, unless the error says that what was written before it must stay (``keeps_changes``: a
wrong password or code counted towards a lockout, a reused authorization code whose grant was just
revoked). So no caller has to know which exception means "commit".
"""

from __future__ import annotations

from typing import ClassVar


class Refused(Exception):
    """A refusal that a surface answers from its own table (a page, a problem, an OAuth error)."""

    keeps_changes: ClassVar[bool] = False
