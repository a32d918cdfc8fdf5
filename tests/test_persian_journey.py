"""A Persian speaker signs in to an app in Chromium, as the issue's judge walks it: the app asks for
``ui_locales=fa``, every page is Persian and right to left, the person types a national number and
then the code in Persian digits, the code reaches them through the real Kavenegar adapter (at a
local stub of its API, in Persian), and the app gets its tokens.

Screenshots of the sign-in, code, consent and account pages go to ``IDP_TEST_ARTIFACTS`` when set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from .conftest import start_server
from .flows import in_persian, pkce_pair
from .services import QuietHandler, http_server

KAVENEGAR_KEY = "persian-journey-kavenegar-key"
NATIONAL = "09121234567"
E164 = "+989121234567"
CALLBACK = "http://127.0.0.1:9/persian-app/callback"


@dataclass
class Kavenegar:
    """Kavenegar's send API on 127.0.0.1: what it was asked to send, per receptor."""

    url: str = ""
    sent: list[dict[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def texts_to(self, receptor: str) -> list[str]:
        with self.lock:
            return [form["message"][0] for form in self.sent if form.get("receptor") == [receptor]]


@pytest.fixture
def kavenegar() -> Iterator[Kavenegar]:
    state = Kavenegar()

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            assert self.path == f"/v1/{KAVENEGAR_KEY}/sms/send.json"
            form = parse_qs(body.decode())
            with state.lock:
                state.sent.append(form)
            answer = {"return": {"status": 200, "message": "تایید شد"}, "entries": [{"messageid": 1, "status": 1}]}
            self.respond(200, json.dumps(answer).encode())

    with http_server(Handler) as url:
        state.url = url
        yield state


@pytest.fixture
def server(module_environ: dict[str, str], kavenegar: Kavenegar, tmp_path: Path) -> Iterator[str]:
    """``idp serve`` on a database of this module's own, sending its SMS through Kavenegar."""
    environ = module_environ | {
        "IDP_SMS_BACKEND": "kavenegar",
        "IDP_KAVENEGAR_API_KEY": KAVENEGAR_KEY,
        "IDP_KAVENEGAR_API_BASE": kavenegar.url,
        "IDP_PHONE_DEFAULT_REGION": "IR",
    }
    process, url = start_server(environ, tmp_path / "serve.log")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def register_app(module_environ: dict[str, str], issuer: str) -> str:
    """A public app registered as an operator does it, with the CLI; its client id."""
    made = subprocess.run(
        [
            str(Path(sys.executable).parent / "idp"),
            "clients",
            "create",
            "--name",
            "برنامه‌ی نمونه",
            "--redirect-uri",
            CALLBACK,
            "--token-endpoint-auth-method",
            "none",
            "--scope",
            "openid phone offline_access",
        ],
        env=os.environ | module_environ | {"IDP_ISSUER": issuer},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    client_id: str = json.loads(made.stdout)["client_id"]
    return client_id


def code_sent(kavenegar: Kavenegar, receptor: str) -> str:
    """The code in the text Kavenegar was asked to send, once the delivery worker sent it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        texts = kavenegar.texts_to(receptor)
        if texts:
            (text,) = texts
            assert "کد" in text and "code" not in text.lower(), text
            return next(word for word in text.replace(":", " ").split() if word.isascii() and word.isdigit())
        time.sleep(0.1)
    raise AssertionError(f"Kavenegar was asked for no SMS to {receptor}")


@pytest.fixture
def persian_tab(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(locale="en-US", viewport={"width": 480, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("IDP_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def assert_persian(page) -> None:  # type: ignore[no-untyped-def]
    assert page.locator("html").get_attribute("lang") == "fa"
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"


def test_a_persian_speaker_signs_in_by_sms_with_persian_digits(
    persian_tab, server, kavenegar, module_environ, artifacts
):
    """The browser itself asks for English: ``ui_locales=fa`` of the app's request wins."""
    page = persian_tab
    client_id = register_app(module_environ, server)
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid phone offline_access",
        "state": "persian-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "ui_locales": "fa",
    }
    page.route(CALLBACK + "*", lambda route: route.fulfill(status=200, body="back at the app"))

    page.goto(f"{server}/authorize?{urlencode(params)}")
    assert_persian(page)
    page.screenshot(path=str(artifacts / "journey-fa-login.png"), full_page=True)

    with page.expect_navigation():
        page.click("a[href^='/login/code']")
    assert_persian(page)
    page.fill("input[name=identifier]", in_persian(NATIONAL))
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert_persian(page)
    assert page.evaluate("getComputedStyle(document.querySelector('#code')).direction") == "ltr"
    page.screenshot(path=str(artifacts / "journey-fa-code.png"), full_page=True)

    code = code_sent(kavenegar, E164)
    page.fill("input[name=code]", in_persian(code))
    with page.expect_navigation():
        page.click("form[action='/login/verify'] button[type=submit]")
    assert_persian(page)
    said = page.locator("main").inner_text()
    assert E164 in said and "None" not in said, "a phone-only person is named by their number"
    page.screenshot(path=str(artifacts / "journey-fa-consent.png"), full_page=True)

    with page.expect_request(lambda request: request.url.startswith(CALLBACK)) as back:
        page.click("button[name=decision][value=allow]")
    returned = parse_qs(urlsplit(back.value.url).query)
    assert returned["state"] == ["persian-state"] and returned["iss"] == [server]

    tokens = httpx.post(
        f"{server}/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": returned["code"][0],
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        },
        timeout=10,
    ).json()
    keys = jwt.PyJWKClient(f"{server}/jwks.json")
    claims = jwt.decode(
        tokens["id_token"],
        keys.get_signing_key_from_jwt(tokens["id_token"]).key,
        algorithms=["RS256"],
        audience=client_id,
        issuer=server,
    )
    assert claims["phone_number"] == E164 and claims["phone_number_verified"] is True
    assert "refresh_token" in tokens

    page.goto(f"{server}/account")
    assert_persian(page)
    page.screenshot(path=str(artifacts / "journey-fa-account.png"), full_page=True)
