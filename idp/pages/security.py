"""Two-step sign-in on ``/account/security``: turn it on (authenticator app, email or SMS code),
turn it off, make new recovery codes.

Turning it on is two pages: ``enable`` starts an enrolment (the QR code, or a code sent) and
``confirm`` takes the ``code`` that proves it works, then shows the recovery codes once. Every
change asks for ``current_password`` unless the session signed in a few minutes ago. The forms
are served by the request pipeline (:mod:`idp.pages.signed_in`); each handler calls one account
command.
"""

from __future__ import annotations

from starlette.responses import Response

from ..accounts import commands, second_factor, totp
from ..accounts.codes_vocabulary import SecondFactorMethod
from ..accounts.errors import AccountError, Code
from ..catalogs import N_
from ..security.rate_limits import Limit
from ..web.locale import translate
from ..web.pipeline import Needs
from ..web.rendering import render
from .signed_in import Form, Person, signed_in
from .surface import Shown

TURNED_ON = N_("Two-step sign-in is on.")
TURNED_OFF = N_("Two-step sign-in is off.")
RESENT = N_("We sent you a new code.")
NEW_CODES = N_("Your new recovery codes are ready; the earlier ones no longer work.")


def _overview_page(call: Person, shown: Shown) -> Response:
    page = {
        "user": call.who.user,
        "needs_password": second_factor.needs_password(call.who.auth_time),
        "recovery_codes": totp.remaining_recovery_codes(call.db, call.who.user),
        "error": shown.error,
        "notice": shown.notice,
    }
    return render(call.request, "account_security.html", page, status_code=shown.status_code)


def _enrolment_page(call: Person, shown: Shown) -> Response:
    """The enrolment under way again, with a refusal of its code; the overview once it expired."""
    try:
        enrolment = second_factor.open_enrolment(call.ctx, call.who.user, call.values.get("enrolment", ""))
    except AccountError:
        return _overview_page(call, Shown(error=shown.error, status_code=shown.status_code))
    page = {"enrolment": enrolment, "error": shown.error, "notice": shown.notice, "wait": shown.wait}
    return render(call.request, "account_security_enrol.html", page, status_code=shown.status_code)


def _recovery_page(call: Person, codes: list[str], notice: str) -> Response:
    return render(call.request, "account_security_recovery.html", {"codes": codes, "notice": notice})


OVERVIEW = Form(_overview_page)
ENROLMENT = Form(_enrolment_page)
CODE = Form(_overview_page, elsewhere={Code.WRONG_CODE: ENROLMENT, Code.TOO_MANY_CODES: ENROLMENT})


@signed_in(OVERVIEW)
def security(call: Person) -> Response:
    return _overview_page(call, Shown())


@signed_in(OVERVIEW, Needs(lock=False))
def enable(call: Person) -> Response:
    """Email and SMS enrolments send a code, so they spend the verification budget like a resend."""
    method = call.values.get("method", "")
    if method in (SecondFactorMethod.EMAIL, SecondFactorMethod.SMS):
        call.spend(Limit.VERIFICATION)
    password = call.values.get("current_password", "")
    enrolment = commands.start_second_factor(call.ctx, call.db, call.who, method, password, call.lock)
    return render(call.request, "account_security_enrol.html", {"enrolment": enrolment})


@signed_in(CODE)
def confirm(call: Person) -> Response:
    values = call.values
    codes = commands.confirm_second_factor(
        call.ctx, call.db, call.who, values.get("enrolment", ""), values.get("code", "")
    )
    return _recovery_page(call, codes, translate(call.request, TURNED_ON))


@signed_in(CODE, Needs(limits=(Limit.VERIFICATION,)))
def resend(call: Person) -> Response:
    enrolment = commands.resend_enrolment_code(call.ctx, call.db, call.who, call.values.get("enrolment", ""))
    page = {"enrolment": enrolment, "notice": translate(call.request, RESENT)}
    return render(call.request, "account_security_enrol.html", page)


@signed_in(OVERVIEW, Needs(lock=False))
def disable(call: Person) -> Response:
    commands.turn_off_second_factor(call.ctx, call.db, call.who, call.values.get("current_password", ""), call.lock)
    return _overview_page(call, Shown(notice=translate(call.request, TURNED_OFF)))


@signed_in(OVERVIEW, Needs(lock=False))
def recovery_codes(call: Person) -> Response:
    password = call.values.get("current_password", "")
    codes = commands.new_recovery_codes(call.ctx, call.db, call.who, password, call.lock)
    return _recovery_page(call, codes, translate(call.request, NEW_CODES))
