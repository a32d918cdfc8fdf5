"""Queueing messages: render from ``idp/templates/`` and add one outbox row to the caller's transaction.

The caller commits the message together with what caused it (a code, a reset token, a notice), so
a message is sent exactly when that change is real, and the worker never blocks a page.

An email template pair is ``email/<name>.txt`` and ``email/<name>.html``; the first line of the
text template is the subject, the rest is the text. An SMS template is ``sms/<name>.txt``.
The subject is sealed with the text, as a subject may carry a code too. A message is written in
the recipient's saved language (``locale``), else in the language of the request that caused it
(:func:`idp.languages.speaker`).

Every message says until when it is worth sending (``useful_until``): a code until it expires, a
link for its lifetime, a notice for ``NOTICE_LIFETIME``. The worker retries it until then, however
long the mail or SMS provider is down, and drops it after.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from ..accounts.codes_vocabulary import Channel
from ..languages import Language, speaker
from ..security.digests import new_id
from ..security.sealing import OUTBOX, Sealer
from ..storage import OutboxMessage, now
from ..theme import Theme, theme_of

NOTICE_LIFETIME = 3 * 24 * 3600
"""A notice (password changed, phone removed, account locked, ...) tells the owner of a change they
may not have made: it is worth as much after a weekend's outage as on the day, since the way back
it offers (a password reset) still works. Three days covers an outage from a Friday evening to a
Monday morning; a notice older than that is no longer news, and the audit log keeps the change."""


def render_email(
    template: str, context: dict[str, Any], language: Language, theme: Theme | None = None
) -> tuple[str, str, str]:
    """The subject, the text and the HTML of ``email/<template>`` in ``language``, as ``theme``
    (the shipped look when none) has them."""
    templates = (theme or Theme()).messages
    context = {**context, "language": language}
    subject, _, text = templates.get_template(f"email/{template}.txt").render(context).partition("\n")
    html = templates.get_template(f"email/{template}.html").render(context)
    return subject.strip(), text.strip() + "\n", html


def render_sms(template: str, context: dict[str, Any], language: Language, theme: Theme | None = None) -> str:
    templates = (theme or Theme()).messages
    return templates.get_template(f"sms/{template}.txt").render({**context, "language": language}).strip()


def notice_useful_until() -> int:
    """When a notice queued now stops being worth sending."""
    return now() + NOTICE_LIFETIME


def enqueue(
    db: Session,
    secret_key: str,
    channel: Channel,
    to: str,
    template: str,
    context: dict[str, Any],
    *,
    useful_until: int,
    locale: str | None = None,
) -> OutboxMessage:
    """``to`` is an email address, or an E.164 number as ``idp.accounts.phones`` makes it;
    ``locale`` the recipient's saved language, if any."""
    language, theme = speaker(db).language_for(locale), theme_of(db)
    if channel is Channel.EMAIL:
        subject, text, html = render_email(template, context, language, theme)
        content = {"subject": subject, "text": text, "html": html}
    else:
        content = {"text": render_sms(template, context, language, theme)}
    return _enqueue(db, secret_key, channel, to, content, useful_until)


def _enqueue(
    db: Session, secret_key: str, channel: Channel, to: str, content: dict[str, str], useful_until: int
) -> OutboxMessage:
    stamp = now()
    message = OutboxMessage(
        id=new_id(),
        channel=channel,
        recipient=to,
        body=Sealer(secret_key, OUTBOX).seal(json.dumps(content)),
        created_at=stamp,
        attempts=0,
        next_attempt_at=stamp,
        useful_until=useful_until,
    )
    db.add(message)
    db.flush()
    return message
