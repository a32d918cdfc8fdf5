"""Self-registration and the emailed link that verifies the address.

Registering answers the same whether or not the address already has an account: a taken address
gets no new account and no change, only an email to its owner saying someone tried (sign in, or
reset the password). A phone number given at registration is kept on no account until it is
proven, for the same reason: were a free number kept on the new account and one someone else has
left off, whoever registered would read on their own account whether someone has it. The link
keeps the number instead, and once the address is verified a code goes to it, which makes it the
person's as it makes a number added on ``/account`` theirs (:mod:`.profile`).

Anyone can register someone else's address with a password of their own, so the link must not let
the address's owner verify it into the stranger's hands. The account keeps the digest of a cookie
of the browser that registered it and chose its password (``registration_browser_hash``), and only
that browser is signed in by a verification link: the first link and every link sent again
carry that digest, whoever asks for them, so the owner registering the same address in their own
browser (they get the same "check your email" page) and asking for a new link there gets a link
that, like any link opened in another browser, asks for the password chosen at registration before
it verifies anything, and then only verifies. The owner who does not know that password proves the
address another way, and that first proof takes the account back from whoever made it
(:mod:`.reclaim`). The digest is kept only until the account first proves anything (its address
verified, or a sign-in, after which the password may change): from then on no browser skips the
password. While it is kept the password is still the one typed at registration, so a browser
signed in by the link authenticated then: its session's ``auth_time`` is the registration's.

The link (:mod:`.links`) also remembers the authorization request the person came from, so they
land back at the relying app; a link sent again carries the earlier link's, never one named by
whoever asked for it. A registration waits ``LINK_LIFETIME`` from when it was made: links
sent again expire with it, and cleanup (:mod:`idp.housekeeping`) then removes an account that never
proved anything, so that asking for links again and again cannot hold someone else's address.

Mail to an address is limited per address, by the rate limiter under a keyed digest of it (in
Redis when configured, so every process agrees), and even with ``IDP_RATE_LIMITING`` off, since the
address may belong to someone who never asked: the mail a registration sends (its link, or the
notice to a taken address' owner, ``IDP_RATE_LIMIT_REGISTRATION_ADDRESS``), and the requests for a
new link (``IDP_RATE_LIMIT_VERIFICATION_ADDRESS``). Asking for a new link answers the same for every
address, so that limit counts the requests for an address, not the links sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import audit
from ..audit import Event, mask
from ..context import Context
from ..messaging.outbox import enqueue, notice_useful_until
from ..security.digests import digests_equal, keyed_digest, token_digest
from ..security.rate_limits import Limit
from ..settings import Settings
from ..storage import ActionToken, User, now
from . import links, terms
from .codes_vocabulary import Channel, Purpose
from .errors import AccountError, Code, InvalidEmail, PasswordsDiffer
from .otp import ResendTooSoon
from .password_policy import check_new_password, set_password
from .passwords import hash_password
from .phones import to_e164
from .profile import send_phone_code
from .reauthentication import NotReauthenticated, Proof, RecentSignIn, WrongPassword, confirm, prove
from .sms_budget import SmsRefused
from .users import UserError, clean_name, create_user, lock_user, normalize_email

PURPOSE = Purpose.VERIFY_EMAIL
LINK_LIFETIME = 24 * 60 * 60
REGISTRATION_EVENT = Event.REGISTRATION
RESEND_EVENT = Event.VERIFICATION_RESENT


class PasswordNeeded(Exception):
    """The link was opened in another browser: the password chosen at registration must come first."""


class InvalidLink(AccountError):
    """The verification link is unknown, used or expired, or its account changed its address
    since; the refusal is recorded."""

    code = Code.INVALID_LINK
    keeps_changes = True

    fixed_reason = "verification"


class NotTheRegistrationPassword(NotReauthenticated):
    """The password given with a link opened in another browser is not the one chosen at
    registration; the try counted toward the lockout."""

    code = Code.WRONG_PASSWORD

    fixed_reason = "registration_password"


class TooManyLinks(AccountError):
    """Several links went to this address a moment ago; the refusal is recorded, without the
    address's key, so asking again and again does not push the wait out."""

    code = Code.TOO_MANY_EMAILS
    keeps_changes = True

    def __init__(self, wait: int) -> None:
        super().__init__("verification_links", wait=wait)


@dataclass(frozen=True)
class Application:
    """What the registration form sent."""

    email: str
    password: str
    password_confirm: str
    name: str = ""
    phone: str = ""
    accepted_terms: bool = False
    given_name: str = ""
    family_name: str = ""

    def names(self) -> Names:
        """The names to keep; raises :class:`~.users.NameRefused`."""
        return Names(clean_name(self.name), clean_name(self.given_name), clean_name(self.family_name))


@dataclass(frozen=True)
class Names:
    """The names a person gave at registration, as their claims hold them (``None``: not given)."""

    name: str | None
    given_name: str | None
    family_name: str | None


@dataclass(frozen=True)
class Registered:
    """``created`` is False when the address already had an account: for the audit log only."""

    user: User
    created: bool


@dataclass(frozen=True)
class FollowUp:
    """What following a verification link leads to besides the verified address: the
    authorization request the registering browser came from, and the phone number given at
    registration, then sent its code. Every link of a registration carries the same."""

    authorization_request_id: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Verified:
    """``same_browser``: the browser that chose the password, to be signed in as at ``registered_at``."""

    user: User
    authorization_request_id: str | None
    same_browser: bool
    registered_at: int


def address_key(secret_key: str, email: str) -> str:
    """A keyed digest naming an address in rate limits and audit events without the address itself."""
    return keyed_digest(secret_key, f"address:{email}")


def requests_wait(ctx: Context, limit: Limit, key: str) -> int:
    """Seconds before the next request under ``limit`` for the address ``key`` may send mail; 0
    when it may now, and then it counts. A refused request does not count, so asking again and
    again does not push the wait further out."""
    refusal = ctx.rate_limiter.check(limit, key)
    return 0 if refusal is None else refusal.retry_after


def parse(settings: Settings, form: Application) -> tuple[str, str | None, Names]:
    """The normalized email, E.164 phone and names (:meth:`Application.names`); raises :class:`~.errors.InvalidEmail`,
    :class:`~.errors.PasswordsDiffer`, :class:`~.terms.TermsNotAccepted`, or the name's or the
    phone's refusal."""
    if settings.terms_version is not None and not form.accepted_terms:
        raise terms.TermsNotAccepted
    try:
        email = normalize_email(form.email)
    except UserError:
        raise InvalidEmail("no_email") from None
    if form.password != form.password_confirm:
        raise PasswordsDiffer("not_the_same")
    names = form.names()
    phone = to_e164(form.phone, settings.phone_default_region) if form.phone.strip() else None
    return email, phone, names


def register(
    ctx: Context,
    db: Session,
    form: Application,
    *,
    authorization_request_id: str | None,
    browser_hash: str,
    client_id: str | None,
) -> Registered:
    """Make the account and queue its verification link, or tell the owner of a taken address;
    recorded alike, as ``client_id``'s when the person came from an application.

    Raises the same refusals (the form's, :class:`~.password_policy.PasswordRejected`) for new and
    taken addresses, and they keep nothing.
    """
    registered = _register(ctx, db, form, authorization_request_id=authorization_request_id, browser_hash=browser_hash)
    email = registered.user.email
    assert email is not None
    detail: dict[str, object] = {
        "address": address_key(ctx.secret_key, email),
        "recipient": mask(email),
        "account": "new" if registered.created else "existing",
    }
    outcome = "success" if registered.created else "failure"
    user_id = registered.user.id
    audit.record(db, REGISTRATION_EVENT, outcome=outcome, user_id=user_id, client_id=client_id, detail=detail)
    return registered


def _register(
    ctx: Context,
    db: Session,
    form: Application,
    *,
    authorization_request_id: str | None,
    browser_hash: str,
) -> Registered:
    settings, secret_key = ctx.settings, ctx.secret_key
    email, phone, names = parse(settings, form)
    existing = db.scalar(select(User).where(User.email == email))
    if existing is not None:
        return _already_registered(ctx, db, existing, form.password)
    try:
        user = create_user(db, email=email, name=names.name, given_name=names.given_name, family_name=names.family_name)
    except (IntegrityError, UserError):
        # A registration racing this one took the address first. Nothing was written before the
        # account, so rolling back loses nothing.
        db.rollback()
        existing = db.scalar(select(User).where(User.email == email))
        if existing is None:
            raise
        return _already_registered(ctx, db, existing, form.password)
    set_password(db, settings, user, form.password)
    if settings.terms_version is not None:
        terms.accept(db, settings, user, None)
    user.registration_browser_hash = browser_hash
    # The link counts toward the address's mail, as the notices registering it again send do.
    ctx.rate_limiter.check(Limit.REGISTRATION_ADDRESS, address_key(secret_key, email))
    send_link(db, settings, secret_key, user, FollowUp(authorization_request_id, phone))
    return Registered(user, created=True)


def _already_registered(ctx: Context, db: Session, user: User, password: str) -> Registered:
    """The same checks and the same hashing work as a new account, then a notice to the owner
    (within the address's limit, which the new account's link counted toward too, so the form
    cannot be used to flood them)."""
    settings, secret_key = ctx.settings, ctx.secret_key
    check_new_password(
        password,
        email=user.email,
        min_length=settings.password_min_length,
        pwned_api=settings.pwned_passwords_api if settings.pwned_passwords else None,
    )
    hash_password(password)
    assert user.email is not None
    if not requests_wait(ctx, Limit.REGISTRATION_ADDRESS, address_key(secret_key, user.email)):
        enqueue(
            db,
            secret_key,
            Channel.EMAIL,
            user.email,
            "already_registered",
            {"login_link": f"{settings.issuer}/login", "reset_link": f"{settings.issuer}/password/forgot"},
            useful_until=notice_useful_until(),
            locale=user.locale,
        )
    return Registered(user, created=False)


def send_link(db: Session, settings: Settings, secret_key: str, user: User, follow_up: FollowUp) -> bool:
    """A new verification link for ``user``, for the browser that registered it if it still may be
    signed in by one; every earlier unused one is spent. False when the registration has expired
    and no link is sent."""
    assert user.email is not None
    lifetime = _link_lifetime(user)
    if lifetime <= 0:
        return False
    links.cancel(db, user.id, PURPOSE)
    token = links.issue(
        db,
        PURPOSE,
        user.id,
        user.email,
        lifetime,
        authorization_request_id=follow_up.authorization_request_id,
        browser_hash=user.registration_browser_hash,
        phone=follow_up.phone,
    )
    enqueue(
        db,
        secret_key,
        Channel.EMAIL,
        user.email,
        "verify_email",
        {"link": links.url(settings.issuer, "/verify-email", token), "hours": -(-lifetime // 3600)},
        useful_until=now() + lifetime,
        locale=user.locale,
    )
    db.flush()
    return True


def _earlier_follow_up(db: Session, user: User) -> FollowUp:
    """What the newest link of ``user``'s registration leads to: the first link has it from
    registration, and each later one from the one before it. None once the registration is
    proven (a sign-in ends it, and its links then sign in no browser), and none from a link to
    another address: an account whose address an operator changed or marked unverified since
    sends no code to a number it gave back then."""
    if user.registration_browser_hash is None:
        return FollowUp()
    earlier = db.scalar(
        select(ActionToken)
        .where(ActionToken.user_id == user.id, ActionToken.purpose == PURPOSE, ActionToken.email == user.email)
        .order_by(ActionToken.created_at.desc())
        .limit(1)
    )
    if earlier is None:
        return FollowUp()
    return FollowUp(earlier.authorization_request_id, earlier.phone)


def _link_lifetime(user: User) -> int:
    """Seconds a new link lives: a registration still waiting for its first proof ends
    ``LINK_LIFETIME`` after it was made, and a link sent again ends with it."""
    if user.registration_browser_hash is None:
        return LINK_LIFETIME
    return min(LINK_LIFETIME, user.created_at + LINK_LIFETIME - now())


def resend(ctx: Context, db: Session, email: str) -> None:
    """A new link when ``email`` (normalized) has an account waiting for verification; the same
    answer either way, and recorded, or :class:`TooManyLinks`.

    Anyone may ask, so nothing of the asker's goes into the link: it signs in only the browser that
    registered, and leads where the earlier link led (:class:`FollowUp`). A request the asker named
    would otherwise be continued, and its code issued, for the person who registered, the new link
    being the only one that works."""
    key = address_key(ctx.secret_key, email)
    wait = requests_wait(ctx, Limit.VERIFICATION_ADDRESS, key)
    if wait:
        audit.record(db, RESEND_EVENT, outcome="failure", detail={"recipient": mask(email), "reason": "rate_limited"})
        raise TooManyLinks(wait)
    waiting = User.email == email, User.email_verified.is_(False), User.disabled.is_(False)
    user = db.scalar(select(User).where(*waiting))
    sent = user is not None and send_link(db, ctx.settings, ctx.secret_key, user, _earlier_follow_up(db, user))
    detail = {"address": key, "recipient": mask(email), "sent": sent}
    audit.record(db, RESEND_EVENT, outcome="success", user_id=user.id if sent and user else None, detail=detail)


def verify(ctx: Context, db: Session, token: str | None, browser_cookie: str | None, password: str | None) -> Verified:
    """Spend the link and mark the address verified, and record it; :class:`InvalidLink` for an
    unknown, used or expired link, or one whose account changed its address since.

    Opened in a browser other than the one that registered and chose the password, the link
    verifies only with that password: whoever registered someone else's address chose it, and the
    owner following the link must not hand them an account with a verified address. Raises
    :class:`PasswordNeeded` when ``password`` is None there, or a
    :class:`~.reauthentication.NotReauthenticated` (the link left unspent, a wrong password
    counted). The password is checked before the person's row is locked, and confirmed under it.
    """
    link = links.find(db, PURPOSE, token)
    if link is None:
        raise _invalid_link(db)
    holder = db.get(User, link.user_id)
    same_browser = holder is not None and _same_browser(link, holder, browser_cookie)
    proof = None if same_browser or holder is None else _check_password(ctx, db, link, holder, password)
    locked = lock_user(db, link.user_id)
    if proof is not None and locked is not None:
        confirm(locked, proof)
    spent = links.spend(db, PURPOSE, token)
    user = db.get(User, spent.user_id) if spent is not None else None
    if spent is None or user is None or user.email != spent.email:
        raise _invalid_link(db)
    registered_at = user.created_at
    user.email_verified = True
    user.registration_browser_hash = None
    user.updated_at = now()
    verified = Verified(user, spent.authorization_request_id, same_browser and not user.disabled, registered_at)
    audit.record(
        db, Event.EMAIL_VERIFIED, outcome="success", user_id=user.id, detail={"signed_in": verified.same_browser}
    )
    if spent.phone is not None:
        _send_phone_code(ctx, db, user, spent.phone)
    return verified


def _send_phone_code(ctx: Context, db: Session, user: User, phone: str) -> None:
    """The code that makes the number given at registration the person's once they enter it on
    ``/account``, which offers it while it lives. None goes when no text message may go to the
    number now (too many codes went to it lately, or the budgets refuse it): the person can still
    add the number there, and the verification must not fail for it."""
    try:
        with db.begin_nested():
            send_phone_code(ctx, db, user, phone)
    except (ResendTooSoon, SmsRefused):
        return


def _invalid_link(db: Session) -> InvalidLink:
    audit.record(db, Event.EMAIL_VERIFIED, outcome="failure", detail={"reason": "invalid_link"})
    return InvalidLink()


def is_live(db: Session, token: str | None) -> bool:
    """The link is known, unused and unexpired: a form for it is worth showing."""
    return links.find(db, PURPOSE, token) is not None


def _same_browser(link: ActionToken, user: User, browser_cookie: str | None) -> bool:
    """The link is opened in the browser that registered the account and chose its password: the
    link was sent for it, the account still waits for it, and the cookie's digest is its."""
    return bool(
        browser_cookie
        and len(browser_cookie) <= links.MAX_TOKEN
        and user.registration_browser_hash
        and link.browser_hash == user.registration_browser_hash
        and digests_equal(token_digest(browser_cookie), user.registration_browser_hash)
    )


def _check_password(ctx: Context, db: Session, link: ActionToken, user: User, password: str | None) -> Proof | None:
    """The proof that the link's person gave their password (``None``: they have none to give),
    checked as a sign-in would check it: a wrong one counts toward the lockout, and a locked
    account checks none."""
    if user.email != link.email or user.password_hash is None:
        return None
    if password is None:
        raise PasswordNeeded
    try:
        return prove(db, ctx.settings, ctx.secret_key, user, password, recent_sign_in=RecentSignIn.NEVER)
    except NotReauthenticated as exc:
        audit.record(db, Event.EMAIL_VERIFIED, outcome="failure", detail={"reason": exc.reason})
        if isinstance(exc, WrongPassword):
            raise NotTheRegistrationPassword from None
        raise
