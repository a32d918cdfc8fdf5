"""SMS backends: ``console``, the embedded default, and the providers reached over HTTP
(:mod:`idp.messaging.sms_providers`: ``twilio``, ``kavenegar``, ``webhook``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..settings import Settings

if TYPE_CHECKING:
    import httpx

messages_log = logging.getLogger("idp.messages")


@dataclass(frozen=True)
class Sms:
    to: str
    text: str


class SmsBackend(Protocol):
    def send(self, sms: Sms) -> None:
        """Hand the message over, or raise :class:`DeliveryError`."""


class ConsoleSms:
    """The embedded default: messages are printed to the log, where a developer reads them."""

    def send(self, sms: Sms) -> None:
        messages_log.info("sms to %s\n\n%s", sms.to, sms.text)


def sms_backend(settings: Settings, timeout: httpx.Timeout | None = None) -> SmsBackend:
    """The backend ``IDP_SMS_BACKEND`` names; ``timeout`` (a provider's) defaults to its own.
    The providers' module, and httpx with it, is imported only when one of them is named."""
    if settings.sms_backend == "console":
        return ConsoleSms()
    from .sms_providers import provider

    return provider(settings, timeout)
