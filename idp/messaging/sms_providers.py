"""The SMS providers reached over HTTP: ``twilio`` (Messages API), ``kavenegar`` (its send API) and
``webhook`` (JSON).

Every provider is called over httpx with explicit timeouts (5 s to connect, 10 s for each read or
write), from the worker's thread, so a slow provider delays only its own message. Errors name the
provider and the HTTP status or the kind of transport failure, never the message or a credential
(Kavenegar's key is part of its URL, so httpx's own messages, which may quote it, are not passed on).

A module of its own so that httpx (some 3 MB a process) is imported only where one of them is
configured, by :func:`idp.messaging.sms.sms_backend`, when the first text message goes out.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..settings import Settings
from .errors import DeliveryError
from .sms import Sms, SmsBackend

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def _post(provider: str, url: str, timeout: httpx.Timeout, **kwargs: Any) -> httpx.Response:
    """POST and insist on a 2xx answer."""
    try:
        response = httpx.post(url, timeout=timeout, follow_redirects=False, **kwargs)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{provider}: {type(exc).__name__}") from None
    if not response.is_success:
        raise DeliveryError(f"{provider}: HTTP {response.status_code}{_provider_code(response)}")
    return response


def _provider_code(response: httpx.Response) -> str:
    """Twilio's ``code`` or Kavenegar's ``return.status``: the number their documentation explains."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    code = payload.get("code")
    if code is None and isinstance(payload.get("return"), dict):
        code = payload["return"].get("status")
    return f" (code {code})" if isinstance(code, int) else ""


class TwilioSms:
    def __init__(self, settings: Settings, timeout: httpx.Timeout) -> None:
        assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        self.url = f"{settings.twilio_api_base}/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages.json"
        self.auth = (settings.twilio_account_sid, settings.twilio_auth_token)
        self.sender = settings.twilio_from
        self.timeout = timeout

    def send(self, sms: Sms) -> None:
        form = {"To": sms.to, "From": self.sender, "Body": sms.text}
        _post("twilio", self.url, self.timeout, auth=self.auth, data=form)


class KavenegarSms:
    def __init__(self, settings: Settings, timeout: httpx.Timeout) -> None:
        assert settings.kavenegar_api_key
        self.url = f"{settings.kavenegar_api_base}/v1/{settings.kavenegar_api_key}/sms/send.json"
        self.sender = settings.kavenegar_sender
        self.timeout = timeout

    def send(self, sms: Sms) -> None:
        """Kavenegar reports its own status in the body: anything but 200 there is a failure."""
        form = {"receptor": sms.to, "message": sms.text}
        if self.sender is not None:
            form["sender"] = self.sender
        response = _post("kavenegar", self.url, self.timeout, data=form)
        try:
            status = response.json()["return"]["status"]
        except (ValueError, KeyError, TypeError):
            raise DeliveryError("kavenegar: unexpected answer") from None
        if status != 200:
            raise DeliveryError(f"kavenegar: status {status}")


class WebhookSms:
    def __init__(self, settings: Settings, timeout: httpx.Timeout) -> None:
        assert settings.sms_webhook_url
        self.url = settings.sms_webhook_url
        self.timeout = timeout

    def send(self, sms: Sms) -> None:
        _post("webhook", self.url, self.timeout, json={"to": sms.to, "body": sms.text})


def provider(settings: Settings, timeout: httpx.Timeout | None = None) -> SmsBackend:
    """The provider ``IDP_SMS_BACKEND`` names, which must be one of this module's."""
    timeout = TIMEOUT if timeout is None else timeout
    if settings.sms_backend == "twilio":
        return TwilioSms(settings, timeout)
    if settings.sms_backend == "kavenegar":
        return KavenegarSms(settings, timeout)
    if settings.sms_backend == "webhook":
        return WebhookSms(settings, timeout)
    raise ValueError(f"no SMS provider {settings.sms_backend!r}")
