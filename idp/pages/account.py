"""The signed-in person's own page: profile (names, username, language, time zone), phone
verification and removal, sessions, password (changing it, or setting a first one with an emailed
code). The email address changes on a page of its own (:mod:`idp.pages.account_email`).

Each form posts to a path of its own and is served by the request pipeline
(:mod:`idp.pages.signed_in`): a handler here calls one account command and says where to go. What
worked redirects back to ``/account?done=<what>``; a refusal shows the page again with the message
next to the form it concerns.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import RedirectResponse, Response

from ..accounts import commands, email_change, first_password, postal_address, profile
from ..accounts.errors import Code, PasswordsDiffer
from ..accounts.time_zones import known_zones
from ..accounts.usernames import asks_another
from ..catalogs import N_
from ..security.rate_limits import Limit
from ..web.browser import clear_session_cookie
from ..web.json_response import JSONResponse
from ..web.locale import translate
from ..web.pipeline import Needs
from ..web.rendering import render
from .signed_in import Form, Person, done, signed_in
from .surface import Shown

NOTICES = {
    "profile": N_("Your profile is saved."),
    "email": N_("We sent a link to the new address. Your email address changes when you open it."),
    "phone": N_("Your phone number is verified."),
    "phone_removed": N_("Your phone number is removed: codes no longer go to it, and it no longer signs you in."),
    "password_set": N_("Your password is set: you can sign in with it from now on."),
    "session": N_("The session has ended."),
    "others": N_("Your other sessions have ended."),
    "others_phone": N_(
        "Your other sessions have ended, and your phone number was taken off your account: it was added after "
        "you last signed in with your password, so it no longer signs you in. If it is yours, add it again."
    ),
    "password": N_("Your password is changed. Your other sessions have ended."),
}


RESENT = N_("We sent you a new code.")
CODE_SENT = N_("We sent a code to {email}.")


def _notice(call: Person, done: str) -> str | None:
    """The notice of what ``done`` names, in the person's language."""
    notice = NOTICES.get(done)
    return translate(call.request, notice) if notice else None


def _when(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _account_page(call: Person, shown: Shown) -> Response:
    user = call.who.user
    context: dict[str, Any] = {
        "user": user,
        "sessions": profile.list_sessions(call.db, user, call.who.session_id),
        "pending_phone": profile.pending_phone(call.db, user),
        "pending_email": email_change.pending_email(call.db, user),
        "when": _when,
        "error": shown.error,
        "section": shown.section,
        "notice": shown.notice,
        "values": shown.values,
        "password_sign_in": call.ctx.settings.password_sign_in,
        "zones": sorted(known_zones()),
    }
    return render(call.request, "account.html", context, status_code=shown.status_code)


def _verify_page(call: Person, shown: Shown) -> Response:
    phone = profile.pending_phone(call.db, call.who.user)
    if phone is None:
        return RedirectResponse("/account", status_code=303)
    context = {"phone": phone, "error": shown.error, "notice": shown.notice, "wait": shown.wait}
    return render(call.request, "account_phone_verify.html", context, status_code=shown.status_code)


def _password_set_page(call: Person, shown: Shown) -> Response:
    if call.who.user.password_hash is not None:
        return RedirectResponse("/account", status_code=303)
    context = {"email": call.who.user.email, "error": shown.error, "notice": shown.notice, "wait": shown.wait}
    return render(call.request, "account_password_set.html", context, status_code=shown.status_code)


ACCOUNT = Form(_account_page)
PROFILE = Form(_account_page, "profile", refill=(*profile.EDITABLE, *postal_address.ENTERED))
PHONE = Form(_account_page, "phone", refill=("phone",))
PHONE_REMOVE = Form(_account_page, "phone_remove")
PASSWORD = Form(_account_page, "password")
PASSWORD_SET = Form(_password_set_page)
PASSWORD_CODE = Form(_account_page, "password", elsewhere={Code.TOO_MANY_CODES: PASSWORD_SET})
VERIFY_PHONE = Form(_verify_page)
PHONE_CODE = Form(
    _verify_page,
    elsewhere={Code.PHONE_UNAVAILABLE: Form(_account_page, "phone"), Code.PHONE_NEEDED: Form(_account_page, "phone")},
)
DELETE = Form(_account_page, "delete")
CODES = Needs(limits=(Limit.VERIFICATION,))


@signed_in(ACCOUNT)
def account(call: Person) -> Response:
    return _account_page(call, Shown(notice=_notice(call, call.request.query_params.get("done", ""))))


@signed_in(PROFILE)
def update_profile(call: Person) -> Response:
    """The fields posted change; a language left unchosen keeps the browser's. The address's
    parts, when posted, are the whole new address. A username other than the person's own spends
    the address's verification budget: whether one is taken is all a refusal tells, but it must
    not be asked without end."""
    changes = {field: call.values[field] for field in profile.EDITABLE if field in call.values}
    if not changes.get("locale"):
        changes.pop("locale", None)
    parts = {part: call.values[part] for part in postal_address.ENTERED if part in call.values}
    if asks_another(call.who.user, changes.get("preferred_username")):
        call.spend(Limit.VERIFICATION)
    commands.update_profile(call.db, call.who, changes, parts or None)
    return done("profile")


@signed_in(PHONE, Needs(limits=(Limit.VERIFICATION,), lock=False))
def add_phone(call: Person) -> Response:
    """Send a code to the new number once the person gave their current password (an account
    without one: signed in a few minutes ago); the number is stored only once the code comes back.
    The command takes the person's lock once the password is checked."""
    values = call.values
    phone, password = values.get("phone", ""), values.get("current_password", "")
    commands.add_phone(call.ctx, call.db, call.who, phone, password, call.lock)
    return RedirectResponse("/account/phone/verify", status_code=303)


@signed_in(PHONE_CODE, CODES)
def verify_phone(call: Person) -> Response:
    """A code that is wrong is shown on this page; a number another account has, on ``/account``."""
    if not call.unsafe or profile.pending_phone(call.db, call.who.user) is None:
        return _verify_page(call, Shown())
    commands.verify_phone(call.ctx, call.db, call.who, call.values.get("code", ""))
    return done("phone")


@signed_in(VERIFY_PHONE, CODES)
def resend_phone_code(call: Person) -> Response:
    if profile.pending_phone(call.db, call.who.user) is None:
        return RedirectResponse("/account", status_code=303)
    commands.resend_phone_code(call.ctx, call.db, call.who)
    return _verify_page(call, Shown(notice=translate(call.request, RESENT)))


@signed_in(PHONE_REMOVE)
def remove_phone(call: Person) -> Response:
    commands.remove_phone(call.ctx, call.db, call.who)
    return done("phone_removed")


@signed_in(ACCOUNT)
def end_one_session(call: Person) -> Response:
    """End one of the person's sessions; ending this one signs this browser out."""
    if not commands.end_session(call.db, call.who, call.request.path_params["session_id"]):
        return done("session")
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(call.request, response)
    return response


@signed_in(ACCOUNT)
def end_other_sessions(call: Person) -> Response:
    """Sign out everywhere else; a phone number nobody vouched for since it was added goes too."""
    ended = commands.end_other_sessions(call.ctx, call.db, call.who)
    return done("others" if ended.phone_removed is None else "others_phone")


@signed_in(PASSWORD, Needs(limits=(Limit.SIGN_IN,), lock=False))
def change_password(call: Person) -> Response:
    """Each try spends one of the address's sign-in budget: a stolen session must not make the
    server hash guesses of the current password without end (the lockout stops them only per
    account). The command takes the person's lock once the hashing is done."""
    values = call.values
    if values.get("password", "") != values.get("password_confirm", ""):
        raise PasswordsDiffer
    commands.change_password(
        call.ctx, call.db, call.who, values.get("current_password", ""), values.get("password", ""), call.lock
    )
    return done("password")


@signed_in(PASSWORD_CODE, CODES)
def send_password_code(call: Person) -> Response:
    """Email the code that a first password needs; from ``/account``, and again from its form."""
    email = commands.send_password_code(call.ctx, call.db, call.who)
    return _password_set_page(call, Shown(notice=translate(call.request, CODE_SENT, email=email)))


@signed_in(PASSWORD_SET, Needs(limits=(Limit.VERIFICATION,), lock=False))
def set_password(call: Person) -> Response:
    """The code and the new password; a password the policy refuses leaves the code usable. The
    command takes the person's lock once the hashing is done."""
    if not first_password.code_pending(call.db, call.who.user):
        return RedirectResponse("/account", status_code=303)
    if not call.unsafe:
        return _password_set_page(call, Shown())
    values = call.values
    if values.get("password", "") != values.get("password_confirm", ""):
        raise PasswordsDiffer
    commands.set_password(call.ctx, call.db, call.who, values.get("code", ""), values.get("password", ""), call.lock)
    return done("password_set")


@signed_in(ACCOUNT)
def export_data(call: Person) -> Response:
    """Everything held about the person, as a file to keep."""
    headers = {"Content-Disposition": 'attachment; filename="account.json"', "Cache-Control": "no-store"}
    return JSONResponse(commands.export_data(call.db, call.who), headers=headers)


@signed_in(DELETE, Needs(limits=(Limit.SIGN_IN,), lock=False))
def delete_account(call: Person) -> Response:
    """Each try spends one of the address's sign-in budget, as a password change does. The command
    takes the person's lock once the password is checked."""
    commands.delete_account(call.ctx, call.db, call.who, call.values.get("current_password", ""), call.lock)
    response = render(call.request, "account_deleted.html")
    clear_session_cookie(call.request, response)
    return response
