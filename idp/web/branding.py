"""What the sign-in, registration and consent pages show of the client a person is signing in to:
the name it registered and, when it gave them, its logo and the links to its privacy policy and
terms of service (RFC 7591 §2).

The logo comes from the client's own server, so a page that shows one allows that origin, and
only that one, in its ``img-src`` (:func:`image_policy`); every other page keeps the site's policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..oauth.clients import origin_of
from ..security.headers import content_security_policy
from ..storage import Client


@dataclass(frozen=True)
class ClientBrand:
    name: str
    logo_uri: str | None = None
    policy_uri: str | None = None
    tos_uri: str | None = None

    @classmethod
    def of(cls, client: Client | None) -> ClientBrand | None:
        """``None`` when the person came on their own, with no client to name."""
        if client is None:
            return None
        return cls(client.name, client.logo_uri, client.policy_uri, client.tos_uri)


def image_policy(brand: object) -> str | None:
    """The Content-Security-Policy of a page showing ``brand`` (a page's ``client``): ``None``
    when it shows no logo and the site's policy holds."""
    if not isinstance(brand, ClientBrand) or brand.logo_uri is None:
        return None
    return content_security_policy([origin_of(brand.logo_uri)])
