"""Security headers on every response (added by :class:`~idp.web.edge.Edge`).

A response that set its own ``Content-Security-Policy`` keeps it: a page showing a client's logo
allows that one origin for images (:func:`content_security_policy`), and no other page does.
"""

from __future__ import annotations

from collections.abc import Iterable


def content_security_policy(image_origins: Iterable[str] = ()) -> str:
    """The policy of every answer; ``image_origins`` (``scheme://host[:port]``, as
    :func:`idp.oauth.clients.check_web_origin` writes them) may also serve its images."""
    images = " ".join(("'self'", "data:", *image_origins))
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self'; img-src {images}; "
        "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )


CSP = content_security_policy()


class SecurityHeaders:
    """Each header unless the response set its own, added as ready bytes."""

    def __init__(self, *, https: bool) -> None:
        defaults = {
            "content-security-policy": CSP,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "x-frame-options": "DENY",
        }
        if https:
            defaults["strict-transport-security"] = "max-age=31536000; includeSubDomains"
        self.defaults = [(name.encode(), value.encode()) for name, value in defaults.items()]

    def added_to(self, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``headers`` (a response's), followed by each of ours it does not hold."""
        headers = list(headers)
        present = {name.lower() for name, _ in headers}
        return [*headers, *(pair for pair in self.defaults if pair[0] not in present)]
