"""Email backends: ``console`` writes messages to the log, ``smtp`` hands them to a mail server."""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from ..settings import Settings
from .errors import DeliveryError

SMTP_TIMEOUT = 10.0
messages_log = logging.getLogger("idp.messages")


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str
    html: str


class EmailBackend(Protocol):
    def send(self, email: Email) -> None:
        """Hand the message over, or raise :class:`DeliveryError`."""


class ConsoleEmail:
    """The embedded default: messages are printed to the log, where a developer reads them."""

    def send(self, email: Email) -> None:
        messages_log.info("email to %s\nSubject: %s\n\n%s", email.to, email.subject, email.text)


class SmtpEmail:
    def __init__(self, settings: Settings, timeout: float = SMTP_TIMEOUT) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.starttls = settings.smtp_starttls
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self.sender = settings.email_from
        self.timeout = timeout

    def send(self, email: Email) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = email.to
        message["Subject"] = email.subject
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"smtp: {type(exc).__name__} {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"smtp: {type(exc).__name__}") from None


def email_backend(settings: Settings) -> EmailBackend:
    if settings.email_backend == "smtp":
        return SmtpEmail(settings)
    return ConsoleEmail()
