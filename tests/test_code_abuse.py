"""Attacks on one-time codes through the hosted pages: guessing passwordless codes across fresh
codes, spending a person's code budget anonymously, and pumping SMS to numbers anywhere.

The apps have rate limits off, as the suite's shared app has: the SMS budgets hold all the same.

Every test runs apps of its own on a database of this module's own, so that only this process's
delivery worker sends the messages whose codes the log capture reads.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update
from starlette.testclient import TestClient

from idp.settings import Settings, SettingsError
from idp.storage import User, now

from .conftest import PASSWORD, TEST_ISSUER
from .flows import (
    alert_text,
    ask_for_code,
    assert_signed_in,
    ctx_of,
    emailed_code,
    enter_code,
    messages_to,
    post_login,
)
from .services import RedisServer, running_app
from .test_lockout import add_user, lock_emails

SMS_LOGGER = "idp.sms_budget"


@pytest.fixture
def site(module_environ: dict[str, str]) -> Iterator[TestClient]:
    with running_app(module_environ) as client:
        yield client


@pytest.fixture(autouse=True)
def _messages_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="idp.messages")


def locked_until(client: TestClient, user_id: str) -> int | None:
    with ctx_of(client).db() as db:
        return db.get_one(User, user_id).locked_until


def another_browser(client: TestClient) -> TestClient:
    """A second visitor of the same app, with cookies of its own."""
    return TestClient(client.app, base_url=TEST_ISSUER, follow_redirects=False)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def new_phone() -> str:
    """An Iranian mobile number no other test uses."""
    return f"+98912{secrets.randbelow(10**7):07d}"


def new_german_phone() -> str:
    return f"+49151{secrets.randbelow(10**8):08d}"


def budget_refusals(budget: str) -> float:
    return REGISTRY.get_sample_value("idp_sms_budget_spent_total", {"budget": budget}) or 0.0


# --- 5: wrong passwordless codes count toward the lockout ----------------------------------------


def test_wrong_passwordless_codes_across_fresh_codes_lock_the_account(site, caplog):
    user = add_user(site)
    guesses = 0
    while guesses < 5:
        assert ask_for_code(site, user.email).status_code == 303
        code = emailed_code(site, caplog, user.email)
        for _ in range(min(3, 5 - guesses)):
            answer = enter_code(site, wrong(code))
            assert answer.status_code == 400, answer.text
            guesses += 1
    assert locked_until(site, user.id) is not None
    assert len(lock_emails(site, caplog, user.email, awaited=1)) == 1

    assert ask_for_code(site, user.email).status_code == 303
    refused = enter_code(site, emailed_code(site, caplog, user.email))
    assert refused.status_code == 400, refused.text
    assert not any(c.startswith("idp_session=") for c in refused.headers.get_list("set-cookie"))
    assert "locked" in alert_text(refused)
    assert site.get("/account").status_code != 200


def test_a_right_passwordless_code_ends_the_count_of_failures(module_environ, caplog):
    """A person who mistypes a code now and then is never locked out by mistakes months apart."""
    with running_app(module_environ, IDP_LOCKOUT_ATTEMPTS="2") as site:
        user = add_user(site)
        for _ in range(2):
            assert ask_for_code(site, user.email).status_code == 303
            code = emailed_code(site, caplog, user.email)
            assert enter_code(site, wrong(code)).status_code == 400
            assert_signed_in(enter_code(site, code))
        assert locked_until(site, user.id) is None


def test_wrong_codes_answer_alike_for_known_and_unknown_identifiers(site, caplog):
    user = add_user(site)
    nobody = f"nobody-{secrets.token_hex(4)}@example.com"
    with another_browser(site) as stranger:
        answers = []
        for identifier, browser in ((user.email, site), (nobody, stranger)):
            assert ask_for_code(browser, identifier).status_code == 303
            answers.append(enter_code(browser, wrong(emailed_code(site, caplog, identifier))))
    known, unknown = answers
    assert known.status_code == unknown.status_code == 400
    assert alert_text(known) == alert_text(unknown)


# --- 6: an anonymous visitor cannot spend a person's second-factor codes --------------------------


def test_anonymous_sign_in_codes_do_not_stop_the_email_second_factor(site, caplog):
    user = add_user(site)
    with ctx_of(site).db.begin() as db:
        db.execute(update(User).where(User.id == user.id).values(mfa_method="email"))
    with another_browser(site) as anonymous:
        answers = [ask_for_code(anonymous, user.email).status_code for _ in range(5)]
    assert answers[:3] == [303] * 3 and answers[3:] == [429] * 2
    emailed_code(site, caplog, user.email)

    before = messages_to(site, user.email)
    waiting = post_login(site, user.email, PASSWORD)
    assert waiting.status_code == 303 and waiting.headers["location"] == "/login/verify", waiting.text
    assert messages_to(site, user.email) == before + 1
    assert_signed_in(enter_code(site, emailed_code(site, caplog, user.email)))


# --- 8: SMS pumping ------------------------------------------------------------------------------


def test_an_sms_budget_refuses_past_it_with_a_message_an_alert_and_a_metric(module_environ, caplog):
    caplog.set_level(logging.ERROR, logger=SMS_LOGGER)
    budget = {"IDP_REDIS_URL": "", "IDP_SMS_BUDGET_HOUR": "5", "IDP_SMS_BUDGET_COUNTRY_HOUR": "2"}
    with running_app(module_environ, **budget) as site:
        before = budget_refusals("country")
        phones = [new_phone() for _ in range(3)]
        answers = []
        for phone in phones:
            with another_browser(site) as visitor:
                answers.append(ask_for_code(visitor, phone))
        assert [a.status_code for a in answers] == [303, 303, 429]
        assert "text messages" in alert_text(answers[2]).lower()
        assert messages_to(site, phones[2]) == 0
        assert budget_refusals("country") == before + 1
        alerts = [r for r in caplog.records if r.name == SMS_LOGGER and r.levelno == logging.ERROR]
        assert len(alerts) == 1 and "+98" in alerts[0].getMessage()

        with another_browser(site) as visitor:
            assert ask_for_code(visitor, f"abuse-{secrets.token_hex(4)}@example.com").status_code == 303


def test_the_global_sms_budget_holds_across_countries(module_environ, caplog):
    caplog.set_level(logging.ERROR, logger=SMS_LOGGER)
    budget = {"IDP_REDIS_URL": "", "IDP_SMS_BUDGET_HOUR": "2", "IDP_SMS_BUDGET_COUNTRY_HOUR": "2"}
    with running_app(module_environ, **budget) as site:
        before = budget_refusals("global")
        phones = [new_phone(), new_german_phone(), f"+1415555{secrets.randbelow(10**4):04d}"]
        statuses = []
        for phone in phones:
            with another_browser(site) as visitor:
                statuses.append(ask_for_code(visitor, phone).status_code)
        assert statuses == [303, 303, 429]
        assert budget_refusals("global") == before + 1
        assert any(r.name == SMS_LOGGER and r.levelno == logging.ERROR for r in caplog.records)


def test_processes_sharing_redis_share_the_sms_budget(module_environ, tmp_path):
    """Every process of a deployment spends one budget, so more replicas do not send more."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        shared = {"IDP_REDIS_URL": server.url, "IDP_SMS_BUDGET_COUNTRY_HOUR": "1"}
        with running_app(module_environ, **shared) as first, running_app(module_environ, **shared) as second:
            assert ask_for_code(first, new_phone()).status_code == 303
            assert ask_for_code(second, new_phone()).status_code == 429
    finally:
        server.kill()


def test_a_number_outside_the_phone_regions_gets_no_sms(module_environ):
    with running_app(module_environ, IDP_REDIS_URL="", IDP_PHONE_REGIONS="IR") as site:
        german = new_german_phone()
        refused = ask_for_code(site, german)
        assert refused.status_code == 400, refused.text
        assert "text messages" in alert_text(refused).lower()
        assert messages_to(site, german) == 0
        with another_browser(site) as visitor:
            assert ask_for_code(visitor, new_phone()).status_code == 303


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDP_SMS_BUDGET_HOUR", "0"),
        ("IDP_SMS_BUDGET_HOUR", "lots"),
        ("IDP_SMS_BUDGET_COUNTRY_HOUR", "-1"),
        ("IDP_PHONE_REGIONS", "IR,XX"),
        ("IDP_PHONE_REGIONS", "IR,,DE"),
    ],
)
def test_bad_sms_settings_stop_start_up_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=rf"^{name}: "):
        Settings.from_environ({name: value}, env_file="/nonexistent")


def test_sms_settings_are_parsed():
    settings = Settings.from_environ(
        {"IDP_SMS_BUDGET_HOUR": "50", "IDP_SMS_BUDGET_COUNTRY_HOUR": "10", "IDP_PHONE_REGIONS": " ir , DE "},
        env_file="/nonexistent",
    )
    assert (settings.sms_budget_hour, settings.sms_budget_country_hour) == (50, 10)
    assert settings.phone_regions == frozenset({"IR", "DE"})
    assert Settings.from_environ({}, env_file="/nonexistent").phone_regions is None


def test_a_code_signs_in_once_the_lock_has_ended(site, caplog):
    user = add_user(site)
    with ctx_of(site).db.begin() as db:
        db.execute(update(User).where(User.id == user.id).values(locked_until=now() - 1))
    assert ask_for_code(site, user.email).status_code == 303
    assert_signed_in(enter_code(site, emailed_code(site, caplog, user.email)))
