"""Hourly budgets for text messages, against SMS pumping.

Anyone may ask for a sign-in code by SMS, to any number, and some numbers pay whoever runs them a
share of what each message costs. Limits per client address and per number do not stop many
addresses asking for many numbers, so every code by SMS also spends one of the messages of its
country's hourly budget (``IDP_SMS_BUDGET_COUNTRY_HOUR``, by calling code) and of the global one
(``IDP_SMS_BUDGET_HOUR``), and goes only to the regions of ``IDP_PHONE_REGIONS`` when it is set.
The budgets are counted by the rate limiter (in Redis when configured, so every process shares
them) and hold even with ``IDP_RATE_LIMITING`` off. A spent budget is an alarm: an error in the log
and ``idp_sms_budget_spent_total``.
"""

from __future__ import annotations

import logging

import phonenumbers

from ..context import Context
from ..metrics import SMS_BUDGET_SPENT
from ..security.rate_limits import Limit
from .errors import AccountError, Code

log = logging.getLogger("idp.sms_budget")


class SmsRefused(AccountError):
    """No text message may go to this number."""


class SmsNotServed(SmsRefused):
    """The number's country is not one the provider sends to: waiting would not help."""

    code = Code.INVALID_PHONE

    fixed_reason = "not_served"


class SmsBudgetSpent(SmsRefused):
    """The hour's budget of text messages is spent; ``wait`` seconds until the next may go."""

    code = Code.TOO_MANY_CODES

    def __init__(self, wait: int) -> None:
        super().__init__("sms_budget", wait=wait)


def spend(ctx: Context, phone: str) -> None:
    """Take one message for ``phone`` (E.164) out of the budgets, or raise :class:`SmsRefused`."""
    number = phonenumbers.parse(phone)
    regions = ctx.settings.phone_regions
    if regions is not None and phonenumbers.region_code_for_number(number) not in regions:
        raise SmsNotServed
    calling_code = f"+{number.country_code}"
    budgets = (
        (Limit.SMS_COUNTRY, calling_code, "country", ctx.settings.sms_budget_country_hour),
        (Limit.SMS, "all", "global", ctx.settings.sms_budget_hour),
    )
    for limit, key, budget, per_hour in budgets:
        refusal = ctx.rate_limiter.check(limit, key)
        if refusal is None:
            continue
        SMS_BUDGET_SPENT.labels(budget).inc()
        log.error(
            "SMS budget spent: the %s budget of %d an hour refused a code to a %s number; "
            "SMS pumping? Next message in %d s",
            budget,
            per_hour,
            calling_code,
            refusal.retry_after,
        )
        raise SmsBudgetSpent(refusal.retry_after)
