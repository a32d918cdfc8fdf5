"""The contract's settings, parsed by ``Settings.from_environ`` directly."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

import pytest

from idp.settings import Settings, SettingsError

NO_FILE = "/nonexistent/.env"


def parse(env_file: str | Path = NO_FILE, **environ: str) -> Settings:
    return Settings.from_environ(environ, env_file=env_file)


def test_defaults_are_the_contracts_table(monkeypatch):
    # An explicit, empty environment means "nothing set", even when the process has IDP_ variables.
    monkeypatch.setenv("IDP_ISSUER", "https://from-the-process.example")
    settings = Settings.from_environ({}, env_file=NO_FILE)
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.database_url == "sqlite:///./idp.db"
    assert settings.redis_url is None
    assert settings.keys_dir == Path("./keys")
    assert settings.secret_key is None
    assert settings.email_backend == "console"
    assert (settings.smtp_host, settings.smtp_port) == ("localhost", 25)
    assert (settings.smtp_username, settings.smtp_password, settings.smtp_starttls) == (None, None, False)
    assert settings.email_from == "no-reply@localhost"
    assert settings.sms_backend == "console"
    assert (settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_from) == (None, None, None)
    assert settings.twilio_api_base == "https://api.twilio.com"
    assert (settings.kavenegar_api_key, settings.kavenegar_sender) == (None, None)
    assert settings.kavenegar_api_base == "https://api.kavenegar.com"
    assert settings.sms_webhook_url is None
    assert settings.rate_limiting is True
    assert (settings.access_token_ttl, settings.refresh_token_ttl, settings.otp_ttl) == (900, 1_209_600, 300)
    assert settings.phone_default_region is None
    assert settings.self_registration is True
    assert settings.require_verified_email is True
    assert settings.pwned_passwords is False
    assert settings.trusted_proxies == ()
    assert settings.secure_cookies is False
    assert (settings.session_ttl, settings.session_idle_ttl) == (43_200, None)
    assert settings.metrics_port is None


def test_process_environment_is_read_when_no_mapping_is_given(monkeypatch):
    monkeypatch.setenv("IDP_ACCESS_TOKEN_TTL", "600")
    assert Settings.from_environ(env_file=NO_FILE).access_token_ttl == 600


def test_every_variable_is_parsed():
    settings = parse(
        IDP_ISSUER="https://id.example.com",
        IDP_DATABASE_URL="postgresql+psycopg://idp:pw@db.example:5432/idp",
        IDP_REDIS_URL="redis://cache.example:6379/2",
        IDP_KEYS_DIR="/var/lib/idp/keys",
        IDP_SECRET_KEY="Qw7-kR2p_Zt9xLm4Vb8nYc3sDf6gHj1uEo5aTi0WqXe",
        IDP_EMAIL_BACKEND="smtp",
        IDP_SMTP_HOST="mail.example",
        IDP_SMTP_PORT="587",
        IDP_SMTP_USERNAME="mailer",
        IDP_SMTP_PASSWORD="hunter22",
        IDP_SMTP_STARTTLS="true",
        IDP_EMAIL_FROM="login@example.com",
        IDP_SMS_BACKEND="twilio",
        IDP_TWILIO_ACCOUNT_SID="AC123",
        IDP_TWILIO_AUTH_TOKEN="tok",
        IDP_TWILIO_FROM="+14155550100",
        IDP_TWILIO_API_BASE="http://127.0.0.1:9999/",
        IDP_KAVENEGAR_API_KEY="kv",
        IDP_KAVENEGAR_SENDER="1000",
        IDP_KAVENEGAR_API_BASE="https://kavenegar.test",
        IDP_SMS_WEBHOOK_URL="https://hooks.example/sms",
        IDP_RATE_LIMITING="off",
        IDP_ACCESS_TOKEN_TTL="600",
        IDP_REFRESH_TOKEN_TTL="86400",
        IDP_OTP_TTL="120",
        IDP_OTP_LENGTH="8",
        IDP_OTP_ATTEMPTS="5",
        IDP_PHONE_DEFAULT_REGION="ir",
        IDP_SELF_REGISTRATION="off",
        IDP_REQUIRE_VERIFIED_EMAIL="off",
        IDP_PWNED_PASSWORDS="on",
        IDP_TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.7 ::1",
    )
    assert settings.issuer == "https://id.example.com"
    assert settings.database_url == "postgresql+psycopg://idp:pw@db.example:5432/idp"
    assert settings.redis_url == "redis://cache.example:6379/2"
    assert settings.keys_dir == Path("/var/lib/idp/keys")
    assert settings.secret_key == "Qw7-kR2p_Zt9xLm4Vb8nYc3sDf6gHj1uEo5aTi0WqXe"
    assert settings.email_backend == "smtp"
    assert (settings.smtp_host, settings.smtp_port) == ("mail.example", 587)
    assert (settings.smtp_username, settings.smtp_password, settings.smtp_starttls) == ("mailer", "hunter22", True)
    assert settings.email_from == "login@example.com"
    assert settings.sms_backend == "twilio"
    assert (settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_from) == (
        "AC123",
        "tok",
        "+14155550100",
    )
    assert settings.twilio_api_base == "http://127.0.0.1:9999"
    assert (settings.kavenegar_api_key, settings.kavenegar_sender) == ("kv", "1000")
    assert settings.kavenegar_api_base == "https://kavenegar.test"
    assert settings.sms_webhook_url == "https://hooks.example/sms"
    assert settings.rate_limiting is False
    assert (settings.access_token_ttl, settings.refresh_token_ttl, settings.otp_ttl) == (600, 86400, 120)
    assert (settings.otp_length, settings.otp_attempts) == (8, 5)
    assert settings.phone_default_region == "IR"
    assert settings.self_registration is False
    assert settings.require_verified_email is False
    assert settings.pwned_passwords is True
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings.secure_cookies is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("on", True),
        ("ON", True),
        ("true", True),
        ("1", True),
        ("yes", True),
        ("off", False),
        ("Off", False),
        ("false", False),
        ("0", False),
        ("no", False),
    ],
)
def test_flags_accept_on_and_off_spellings(value, expected):
    assert parse(IDP_RATE_LIMITING=value).rate_limiting is expected
    assert parse(IDP_PWNED_PASSWORDS=value).pwned_passwords is expected


@pytest.mark.parametrize("backend", ["kavenegar", "webhook"])
def test_other_sms_backends_with_their_settings(backend):
    extra = {"kavenegar": {"IDP_KAVENEGAR_API_KEY": "key"}, "webhook": {"IDP_SMS_WEBHOOK_URL": "https://h.example/"}}
    assert parse(IDP_SMS_BACKEND=backend, **extra[backend]).sms_backend == backend


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDP_ISSUER", "not-a-url"),
        ("IDP_ISSUER", "ftp://id.example"),
        ("IDP_ISSUER", "https://id.example/?tenant=1"),
        ("IDP_ISSUER", "https://id.example/#top"),
        ("IDP_DATABASE_URL", "mysql://x"),
        ("IDP_DATABASE_URL", "not a url"),
        ("IDP_REDIS_URL", "http://cache.example"),
        ("IDP_SECRET_KEY", "too-short"),
        ("IDP_EMAIL_BACKEND", "pigeon"),
        ("IDP_SMTP_PORT", "smtp"),
        ("IDP_SMTP_PORT", "70000"),
        ("IDP_SMTP_STARTTLS", "sometimes"),
        ("IDP_SMS_BACKEND", "carrier-pigeon"),
        ("IDP_TWILIO_API_BASE", "api.twilio.com"),
        ("IDP_KAVENEGAR_API_BASE", "nope"),
        ("IDP_SMS_WEBHOOK_URL", "/relative"),
        ("IDP_RATE_LIMITING", "maybe"),
        ("IDP_ACCESS_TOKEN_TTL", "abc"),
        ("IDP_ACCESS_TOKEN_TTL", "-5"),
        ("IDP_ACCESS_TOKEN_TTL", "0"),
        ("IDP_ACCESS_TOKEN_TTL", "1.5"),
        ("IDP_REFRESH_TOKEN_TTL", "two weeks"),
        ("IDP_OTP_TTL", "0"),
        ("IDP_OTP_LENGTH", "5"),
        ("IDP_OTP_LENGTH", "9"),
        ("IDP_OTP_ATTEMPTS", "2"),
        ("IDP_OTP_ATTEMPTS", "6"),
        ("IDP_SESSION_TTL", "0"),
        ("IDP_SESSION_TTL", "forever"),
        ("IDP_SESSION_IDLE_TTL", "60"),
        ("IDP_SESSION_IDLE_TTL", "-1"),
        ("IDP_SESSION_IDLE_TTL", "15m"),
        ("IDP_REMEMBER_TTL", "60"),
        ("IDP_REMEMBER_TTL", "a month"),
        ("IDP_METRICS_PORT", "0"),
        ("IDP_METRICS_PORT", "65536"),
        ("IDP_METRICS_PORT", "metrics"),
        ("IDP_PHONE_DEFAULT_REGION", "XX"),
        ("IDP_SELF_REGISTRATION", "perhaps"),
        ("IDP_REQUIRE_VERIFIED_EMAIL", "2"),
        ("IDP_PWNED_PASSWORDS", "enabled"),
        ("IDP_TRUSTED_PROXIES", "nonsense"),
        ("IDP_TRUSTED_PROXIES", "10.0.0.1, 300.1.1.1"),
    ],
)
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(SettingsError) as raised:
        parse(**{name: value})
    message = str(raised.value)
    assert message.startswith(name), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("backend", "missing"),
    [
        ("twilio", {"IDP_TWILIO_ACCOUNT_SID": "", "IDP_TWILIO_AUTH_TOKEN": "t", "IDP_TWILIO_FROM": "+14155550100"}),
        ("twilio", {"IDP_TWILIO_ACCOUNT_SID": "AC1", "IDP_TWILIO_AUTH_TOKEN": "", "IDP_TWILIO_FROM": "+14155550100"}),
        ("twilio", {"IDP_TWILIO_ACCOUNT_SID": "AC1", "IDP_TWILIO_AUTH_TOKEN": "t"}),
        ("kavenegar", {}),
        ("webhook", {}),
    ],
)
def test_sms_backend_without_its_settings_names_the_missing_variable(backend, missing):
    with pytest.raises(SettingsError) as raised:
        parse(IDP_SMS_BACKEND=backend, **missing)
    message = str(raised.value)
    absent = [
        k
        for k in (
            "IDP_TWILIO_ACCOUNT_SID",
            "IDP_TWILIO_AUTH_TOKEN",
            "IDP_TWILIO_FROM",
            "IDP_KAVENEGAR_API_KEY",
            "IDP_SMS_WEBHOOK_URL",
        )
        if not missing.get(k)
    ]
    assert any(message.startswith(name) for name in absent), message


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nIDP_ACCESS_TOKEN_TTL=600\nIDP_EMAIL_BACKEND=smtp\nIDP_ISSUER=https://from-file.example\n"
    )
    from_file = parse(env_file)
    assert from_file.access_token_ttl == 600
    assert from_file.email_backend == "smtp"
    assert from_file.issuer == "https://from-file.example"

    both = parse(env_file, IDP_ACCESS_TOKEN_TTL="1200", IDP_ISSUER="https://from-env.example")
    assert both.access_token_ttl == 1200
    assert both.issuer == "https://from-env.example"
    assert both.email_backend == "smtp"


def test_dotenv_in_the_working_directory_is_the_default(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("IDP_OTP_TTL=90\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_environ({"IDP_KEYS_DIR": "k"}).otp_ttl == 90


def test_bad_value_in_dotenv_names_the_variable(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("IDP_RATE_LIMITING=maybe\n")
    with pytest.raises(SettingsError, match=r"^IDP_RATE_LIMITING"):
        parse(env_file)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://id.example/", "https://id.example"),
        ("https://id.example///", "https://id.example"),
        ("https://id.example/tenant/", "https://id.example/tenant"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ],
)
def test_issuer_trailing_slash_is_stripped(value, expected):
    assert parse(IDP_ISSUER=value).issuer == expected


@pytest.mark.parametrize(
    ("issuer", "secure"),
    [("https://id.example", True), ("http://id.example", False), ("http://127.0.0.1:8000", False)],
)
def test_secure_cookies_only_for_https(issuer, secure):
    assert parse(IDP_ISSUER=issuer).secure_cookies is secure


def test_blank_values_mean_the_default():
    settings = parse(IDP_ACCESS_TOKEN_TTL="", IDP_EMAIL_BACKEND="  ", IDP_SECRET_KEY="")
    assert settings.access_token_ttl == 900
    assert settings.email_backend == "console"
    assert settings.secret_key is None


def test_session_lifetimes_are_read():
    settings = parse(IDP_SESSION_TTL="28800", IDP_SESSION_IDLE_TTL="1800", IDP_REMEMBER_TTL="604800")
    assert (settings.session_ttl, settings.session_idle_ttl, settings.remember_ttl) == (28_800, 1_800, 604_800)
    assert parse().remember_ttl == 2_592_000


@pytest.mark.parametrize(
    "value",
    [
        "replace-with-48-random-characters-from-python-secrets",
        "change-me-to-48-random-characters-change-me-to-48-random",
        "changeme" * 4,
        "CHANGE_ME_PLEASE_0123456789abcdefghij",
        "Replace-Me-With-A-Long-Random-Secret-Value",
        "placeholder-placeholder-placeholder",
        "your-secret-key-goes-here-0123456789",
        "secret" * 6,
        "secret-" * 6,
        "x" * 40,
        "0123456789" * 4,
    ],
)
def test_a_placeholder_secret_key_is_refused(value):
    """A key copied from an example passes the length check but is no secret: anyone who read the
    example could forge CSRF tokens and test guesses at client secrets offline."""
    with pytest.raises(SettingsError) as raised:
        parse(IDP_SECRET_KEY=value)
    message = str(raised.value)
    assert message.startswith("IDP_SECRET_KEY"), message
    assert "\n" not in message and value not in message


def test_a_random_secret_key_is_accepted():
    for _ in range(200):
        key = secrets.token_urlsafe(32)
        assert parse(IDP_SECRET_KEY=key).secret_key == key
    assert parse(IDP_SECRET_KEY=secrets.token_hex(16)).secret_key is not None


def test_metrics_port_is_read():
    assert parse(IDP_METRICS_PORT="9000").metrics_port == 9000
