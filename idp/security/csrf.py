"""CSRF protection for the hosted pages: a per-browser cookie and a form token derived from it.

The form token is an HMAC of the cookie under ``IDP_SECRET_KEY``; a page on another site can
make the browser send the cookie but can neither read it nor compute the token.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from .cookies import cookie_name
from .digests import keyed_digest, new_token

BASE_NAME = "idp_csrf"


class Csrf:
    def __init__(self, secret_key: str, secure: bool) -> None:
        self._secret_key = secret_key
        self._secure = secure
        self.cookie = cookie_name(BASE_NAME, secure)

    def _token(self, browser_id: str) -> str:
        return keyed_digest(self._secret_key, "csrf:" + browser_id)

    def issue(self, request: Request) -> tuple[str, str | None]:
        """The form token for this browser, and a new cookie value when it has none yet."""
        browser_id = request.cookies.get(self.cookie)
        if browser_id and 20 <= len(browser_id) <= 100:
            return self._token(browser_id), None
        browser_id = new_token()
        return self._token(browser_id), browser_id

    def set_cookie(self, response: Response, browser_id: str) -> None:
        response.set_cookie(self.cookie, browser_id, httponly=True, samesite="lax", secure=self._secure, path="/")

    def valid(self, request: Request, submitted: str | None) -> bool:
        browser_id = request.cookies.get(self.cookie)
        if not browser_id or not submitted or len(submitted) > 128:
            return False
        return hmac.compare_digest(self._token(browser_id).encode(), submitted.encode())
