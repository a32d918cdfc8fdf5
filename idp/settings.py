"""The contract's settings, parsed and checked once at start-up.

Every ``IDP_*`` variable is read from the environment, then from a ``.env`` file in the
working directory. A bad value raises :class:`SettingsError` whose message names the variable, so
start-up stops with one line an operator can act on.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import limits
import phonenumbers
from starlette.config import Config

from . import catalogs

_TRUE = {"on", "true", "1", "yes"}
MAX_RATE_AMOUNT = 100_000
MAX_RATE_WINDOW = 86_400
MAX_SITE_NAME = 30
_FALSE = {"off", "false", "0", "no"}
# Words of example values, compared with the key lowercased and stripped of all but letters and
# digits: fewer than one random key in 100 million holds one of them by chance.
_PLACEHOLDER_MARKERS = ("changeme", "replaceme", "replacewith", "placeholder", "goeshere", "example")
_REPEATED = re.compile(r"^(.{1,16}?)\1{2,}$", re.DOTALL)
_KEY_RECIPE = "the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


class SettingsError(ValueError):
    """A setting has a value idp cannot run with; the message starts with the variable's name."""


@dataclass(frozen=True)
class Settings:
    issuer: str = "http://127.0.0.1:8000"
    database_url: str = "sqlite:///./idp.db"
    redis_url: str | None = None
    keys_dir: Path = Path("./keys")
    secret_key: str | None = None
    email_backend: str = "console"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    email_from: str = "no-reply@localhost"
    sms_backend: str = "console"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    kavenegar_api_key: str | None = None
    kavenegar_sender: str | None = None
    kavenegar_api_base: str = "https://api.kavenegar.com"
    sms_webhook_url: str | None = None
    rate_limiting: bool = True
    delivery_worker: bool = True
    rate_limit_registration: str = "60/hour"
    rate_limit_sign_in: str = "300/hour"
    rate_limit_sign_in_account: str = "10/hour"
    rate_limit_reset: str = "60/hour"
    rate_limit_verification: str = "300/hour"
    rate_limit_token: str = "600/minute"
    rate_limit_authorize: str = "120/minute"
    rate_limit_registration_address: str = "3 per 2 minutes"
    rate_limit_verification_address: str = "3 per 2 minutes"
    rate_limit_email_change_address: str = "3 per 2 minutes"
    rate_limit_ipv6_prefix: int = 64
    access_token_ttl: int = 900
    refresh_token_ttl: int = 1_209_600
    otp_ttl: int = 300
    otp_length: int = 6
    otp_attempts: int = 3
    session_ttl: int = 43_200
    session_idle_ttl: int | None = None
    remember_ttl: int = 2_592_000
    metrics_port: int | None = None
    phone_default_region: str | None = None
    phone_regions: frozenset[str] | None = None
    sms_budget_hour: int = 1000
    sms_budget_country_hour: int = 200
    self_registration: bool = True
    password_sign_in: bool = True
    require_verified_email: bool = True
    pwned_passwords: bool = False
    password_min_length: int = 8
    lockout_attempts: int = 5
    lockout_seconds: int = 1800
    pwned_passwords_api: str = "https://api.pwnedpasswords.com"
    audit_retention_days: int = 365
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())
    default_locale: str = catalogs.SOURCE
    site_name: str = "idp"
    theme_dir: Path | None = None
    terms_url: str | None = None
    terms_version: str | None = None

    @property
    def secure_cookies(self) -> bool:
        """Cookies get ``Secure`` and the ``__Host-`` prefix only when browsers reach us over https."""
        return self.issuer.startswith("https://")

    @property
    def id_token_ttl(self) -> int:
        return self.access_token_ttl

    @property
    def max_signed_token_ttl(self) -> int:
        """How long any token signed by a key can stay valid: a key stays published that long."""
        return max(self.access_token_ttl, self.id_token_ttl)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] = ".env"
    ) -> Settings:
        environ = os.environ if environ is None else environ  # an explicit empty mapping means nothing is set
        source = Config(Path(env_file) if Path(env_file).is_file() else None, environ=environ)

        def text(name: str, default: str | None = None) -> str | None:
            value: str | None = source(name, cast=str, default=default)
            if value is None or value.strip() == "":
                return default
            return value.strip()

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = (text(name, default) or default).lower()
            if value not in allowed:
                raise SettingsError(f"{name}: must be one of {', '.join(allowed)}, not {value!r}")
            return value

        def flag(name: str, default: bool) -> bool:
            value = text(name)
            if value is None:
                return default
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise SettingsError(f"{name}: must be on or off, not {value!r}")

        def number(name: str, default: int, low: int, high: int) -> int:
            value = text(name)
            if value is None:
                return default
            try:
                parsed = int(value)
            except ValueError:
                raise SettingsError(f"{name}: must be a whole number, not {value!r}") from None
            if not low <= parsed <= high:
                raise SettingsError(f"{name}: must be between {low} and {high}, not {parsed}")
            return parsed

        def optional_number(name: str, low: int, high: int) -> int | None:
            return None if text(name) is None else number(name, low, low, high)

        def url(name: str, default: str | None, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
            value = text(name, default)
            if value is None:
                return None
            parts = urlsplit(value)
            where = parts.path if parts.scheme == "unix" else parts.netloc
            if parts.scheme not in schemes or not where:
                raise SettingsError(f"{name}: must be an absolute {' or '.join(schemes)} URL, not {value!r}")
            return value.rstrip("/")

        def rate(name: str, default: str) -> str:
            """One limit like ``5/hour`` or ``100 per 10 minutes``, as ``limits.parse`` reads it."""
            value = text(name, default) or default
            try:
                parsed = limits.parse_many(value)
            except ValueError:
                raise SettingsError(f"{name}: must be a rate like 5/hour, not {value!r}") from None
            if len(parsed) != 1:
                raise SettingsError(f"{name}: must be one rate like 5/hour, not {value!r}")
            if not 1 <= parsed[0].amount <= MAX_RATE_AMOUNT or parsed[0].get_expiry() > MAX_RATE_WINDOW:
                raise SettingsError(
                    f"{name}: must allow 1 to {MAX_RATE_AMOUNT} requests in a window of at most a day, not {value!r}"
                )
            return value

        issuer = url("IDP_ISSUER", cls.issuer)
        assert issuer is not None
        issuer_parts = urlsplit(issuer)
        if issuer_parts.query or issuer_parts.fragment:
            raise SettingsError("IDP_ISSUER: must have no query or fragment")

        database_url = text("IDP_DATABASE_URL", cls.database_url)
        assert database_url is not None
        _check_database_url(database_url)

        secret_key = text("IDP_SECRET_KEY")
        if secret_key is not None:
            _check_secret_key(secret_key)

        region = text("IDP_PHONE_DEFAULT_REGION")
        if region is not None:
            region = region.upper()
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise SettingsError(f"IDP_PHONE_DEFAULT_REGION: {region!r} is not a region code like IR or US")

        settings = cls(
            issuer=issuer,
            database_url=database_url,
            redis_url=url("IDP_REDIS_URL", None, ("redis", "rediss", "unix")),
            keys_dir=Path(text("IDP_KEYS_DIR", "./keys") or "./keys"),
            secret_key=secret_key,
            email_backend=choice("IDP_EMAIL_BACKEND", "console", ("console", "smtp")),
            smtp_host=text("IDP_SMTP_HOST", cls.smtp_host) or cls.smtp_host,
            smtp_port=number("IDP_SMTP_PORT", cls.smtp_port, 1, 65535),
            smtp_username=text("IDP_SMTP_USERNAME"),
            smtp_password=text("IDP_SMTP_PASSWORD"),
            smtp_starttls=flag("IDP_SMTP_STARTTLS", False),
            email_from=text("IDP_EMAIL_FROM", cls.email_from) or cls.email_from,
            sms_backend=choice("IDP_SMS_BACKEND", "console", ("console", "twilio", "kavenegar", "webhook")),
            twilio_account_sid=text("IDP_TWILIO_ACCOUNT_SID"),
            twilio_auth_token=text("IDP_TWILIO_AUTH_TOKEN"),
            twilio_from=text("IDP_TWILIO_FROM"),
            twilio_api_base=url("IDP_TWILIO_API_BASE", cls.twilio_api_base) or cls.twilio_api_base,
            kavenegar_api_key=text("IDP_KAVENEGAR_API_KEY"),
            kavenegar_sender=text("IDP_KAVENEGAR_SENDER"),
            kavenegar_api_base=url("IDP_KAVENEGAR_API_BASE", cls.kavenegar_api_base) or cls.kavenegar_api_base,
            sms_webhook_url=url("IDP_SMS_WEBHOOK_URL", None),
            rate_limiting=flag("IDP_RATE_LIMITING", True),
            delivery_worker=flag("IDP_DELIVERY_WORKER", True),
            rate_limit_registration=rate("IDP_RATE_LIMIT_REGISTRATION", cls.rate_limit_registration),
            rate_limit_sign_in=rate("IDP_RATE_LIMIT_SIGN_IN", cls.rate_limit_sign_in),
            rate_limit_sign_in_account=rate("IDP_RATE_LIMIT_SIGN_IN_ACCOUNT", cls.rate_limit_sign_in_account),
            rate_limit_reset=rate("IDP_RATE_LIMIT_RESET", cls.rate_limit_reset),
            rate_limit_verification=rate("IDP_RATE_LIMIT_VERIFICATION", cls.rate_limit_verification),
            rate_limit_token=rate("IDP_RATE_LIMIT_TOKEN", cls.rate_limit_token),
            rate_limit_authorize=rate("IDP_RATE_LIMIT_AUTHORIZE", cls.rate_limit_authorize),
            rate_limit_registration_address=rate(
                "IDP_RATE_LIMIT_REGISTRATION_ADDRESS", cls.rate_limit_registration_address
            ),
            rate_limit_verification_address=rate(
                "IDP_RATE_LIMIT_VERIFICATION_ADDRESS", cls.rate_limit_verification_address
            ),
            rate_limit_email_change_address=rate(
                "IDP_RATE_LIMIT_EMAIL_CHANGE_ADDRESS", cls.rate_limit_email_change_address
            ),
            rate_limit_ipv6_prefix=number("IDP_RATE_LIMIT_IPV6_PREFIX", cls.rate_limit_ipv6_prefix, 32, 128),
            access_token_ttl=number("IDP_ACCESS_TOKEN_TTL", cls.access_token_ttl, 60, 86_400),
            refresh_token_ttl=number("IDP_REFRESH_TOKEN_TTL", cls.refresh_token_ttl, 300, 31_536_000),
            otp_ttl=number("IDP_OTP_TTL", cls.otp_ttl, 60, 3600),
            otp_length=number("IDP_OTP_LENGTH", cls.otp_length, 6, 8),
            otp_attempts=number("IDP_OTP_ATTEMPTS", cls.otp_attempts, 3, 5),
            session_ttl=number("IDP_SESSION_TTL", cls.session_ttl, 300, 31_536_000),
            session_idle_ttl=optional_number("IDP_SESSION_IDLE_TTL", 300, 31_536_000),
            remember_ttl=number("IDP_REMEMBER_TTL", cls.remember_ttl, 300, 31_536_000),
            metrics_port=optional_number("IDP_METRICS_PORT", 1, 65535),
            phone_default_region=region,
            phone_regions=_regions(text("IDP_PHONE_REGIONS")),
            sms_budget_hour=number("IDP_SMS_BUDGET_HOUR", cls.sms_budget_hour, 1, MAX_RATE_AMOUNT),
            sms_budget_country_hour=number(
                "IDP_SMS_BUDGET_COUNTRY_HOUR", cls.sms_budget_country_hour, 1, MAX_RATE_AMOUNT
            ),
            self_registration=flag("IDP_SELF_REGISTRATION", True),
            password_sign_in=flag("IDP_PASSWORD_SIGN_IN", True),
            require_verified_email=flag("IDP_REQUIRE_VERIFIED_EMAIL", True),
            pwned_passwords=flag("IDP_PWNED_PASSWORDS", False),
            password_min_length=number("IDP_PASSWORD_MIN_LENGTH", cls.password_min_length, 8, 128),
            lockout_attempts=number("IDP_LOCKOUT_ATTEMPTS", cls.lockout_attempts, 1, 100),
            lockout_seconds=number("IDP_LOCKOUT_SECONDS", cls.lockout_seconds, 60, 86_400),
            pwned_passwords_api=url("IDP_PWNED_PASSWORDS_API", cls.pwned_passwords_api) or cls.pwned_passwords_api,
            audit_retention_days=number("IDP_AUDIT_RETENTION_DAYS", cls.audit_retention_days, 0, 36_500),
            trusted_proxies=_proxies(text("IDP_TRUSTED_PROXIES")),
            default_locale=choice("IDP_DEFAULT_LOCALE", cls.default_locale, catalogs.available()),
            site_name=_site_name(text("IDP_SITE_NAME", cls.site_name) or cls.site_name),
            theme_dir=_theme_dir(text("IDP_THEME_DIR")),
            terms_url=url("IDP_TERMS_URL", None, ("https", "http")),
            terms_version=text("IDP_TERMS_VERSION"),
        )
        _check_backends(settings)
        _check_terms(settings)
        return settings


def _regions(value: str | None) -> frozenset[str] | None:
    """``IR,DE``: the regions whose numbers may receive text messages; unset, every region."""
    if value is None:
        return None
    regions = [part.strip().upper() for part in value.split(",")]
    for region in regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise SettingsError(f"IDP_PHONE_REGIONS: {region!r} is not a region code like IR or US")
    return frozenset(regions)


def _site_name(value: str) -> str:
    """Shown in every page's title, every email's subject and some text messages: one short line, so
    that a Persian text message naming it still fits one segment."""
    if len(value) > MAX_SITE_NAME:
        raise SettingsError(f"IDP_SITE_NAME: must be at most {MAX_SITE_NAME} characters")
    if any(not character.isprintable() for character in value):
        raise SettingsError("IDP_SITE_NAME: must be one line of printable text")
    return value


def _theme_dir(value: str | None) -> Path | None:
    """A theme that is not there would leave the site in the shipped look without a word: stop."""
    if value is None:
        return None
    path = Path(value)
    if not path.is_dir():
        raise SettingsError(f"IDP_THEME_DIR: {value!r} is not a directory")
    return path


def _check_database_url(value: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(value)
    except ArgumentError:
        raise SettingsError(f"IDP_DATABASE_URL: {value.split(':', 1)[0]!r}... is not a SQLAlchemy URL") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise SettingsError("IDP_DATABASE_URL: only sqlite and postgresql databases are supported")


def _check_secret_key(value: str) -> None:
    """Refuse a key anyone could know: too short, copied from an example, or one short run typed
    over and over. The value itself is never repeated in the message."""
    if len(value) < 32:
        raise SettingsError("IDP_SECRET_KEY: must be at least 32 characters")
    letters = re.sub(r"[^a-z0-9]", "", value.lower())
    if any(marker in letters for marker in _PLACEHOLDER_MARKERS) or _REPEATED.match(value):
        raise SettingsError(f"IDP_SECRET_KEY: is a placeholder, not a secret; set it to {_KEY_RECIPE}")


def _proxies(value: str | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if value is None:
        return ()
    networks = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"IDP_TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
    return tuple(networks)


def _check_terms(settings: Settings) -> None:
    """Terms are a document and its version together: a version says when to ask again."""
    if (settings.terms_url is None) != (settings.terms_version is None):
        raise SettingsError("IDP_TERMS_URL and IDP_TERMS_VERSION: set both, or neither")
    if settings.terms_version is not None and len(settings.terms_version) > 64:
        raise SettingsError("IDP_TERMS_VERSION: at most 64 characters")


def _check_backends(settings: Settings) -> None:
    required = {
        "twilio": ("IDP_TWILIO_ACCOUNT_SID", "IDP_TWILIO_AUTH_TOKEN", "IDP_TWILIO_FROM"),
        "kavenegar": ("IDP_KAVENEGAR_API_KEY",),
        "webhook": ("IDP_SMS_WEBHOOK_URL",),
    }.get(settings.sms_backend, ())
    for name in required:
        if getattr(settings, name.removeprefix("IDP_").lower()) is None:
            raise SettingsError(f"{name}: must be set when IDP_SMS_BACKEND is {settings.sms_backend}")
