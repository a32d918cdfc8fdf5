"""Moving people from a Django system: ``idp users import`` and ``export`` through the real ``idp``
console script, then sign-ins through the hosted page and the authorization challenge endpoint.

The hashes are made by Django's own hashers (``make_password``), one person per format and way
in, from rows shaped as Django's ``auth_user``. The hashers' work factors are lowered so the suite
stays quick; the formats are those of Django's defaults.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from select import select as select_fds
from typing import Any

import jwt
import pytest
from alembic import command
from argon2 import PasswordHasher, extract_parameters
from django.conf import settings as django_settings
from passlib.hash import django_bcrypt, django_bcrypt_sha256, django_pbkdf2_sha1, django_pbkdf2_sha256
from sqlalchemy import create_engine, select, text
from starlette.testclient import TestClient

from idp.migrate import alembic_config, upgrade
from idp.settings import Settings
from idp.storage import AuditEvent, User, UserGroup

from .conftest import TEST_ISSUER, run_idp
from .flows import TestUser as Person
from .flows import assert_generic_failure, ctx_of, post_login, tokens_for
from .services import own_database, running_app
from .test_first_party_apps import add_client, assert_error, authorization_code, begin, post, tokens

FORMATS = ("pbkdf2_sha256", "pbkdf2_sha1", "argon2", "bcrypt_sha256", "bcrypt")


def django_hashers() -> dict[str, Any]:
    """Django's five hashers, lighter: the same formats, a fraction of the work."""
    if not django_settings.configured:
        django_settings.configure(
            PASSWORD_HASHERS=[
                "django.contrib.auth.hashers.PBKDF2PasswordHasher",
                "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
                "django.contrib.auth.hashers.Argon2PasswordHasher",
                "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
                "django.contrib.auth.hashers.BCryptPasswordHasher",
            ]
        )
    from django.contrib.auth import hashers

    class Pbkdf2(hashers.PBKDF2PasswordHasher):
        iterations = 20_000

    class Pbkdf2Sha1(hashers.PBKDF2SHA1PasswordHasher):
        iterations = 20_000

    class Argon2(hashers.Argon2PasswordHasher):
        memory_cost = 8192

    class BcryptSha256(hashers.BCryptSHA256PasswordHasher):
        rounds = 5

    class Bcrypt(hashers.BCryptPasswordHasher):
        rounds = 5

    return dict(zip(FORMATS, (Pbkdf2(), Pbkdf2Sha1(), Argon2(), BcryptSha256(), Bcrypt()), strict=True))


def make_password(password: str | None, scheme: str = "pbkdf2_sha256") -> str:
    from django.contrib.auth.hashers import make_password as django_make_password

    return django_make_password(password, hasher=django_hashers()[scheme])


def auth_user_row(user_id: int, username: str, password: str, **fields: Any) -> dict[str, Any]:
    """A row of Django's ``auth_user`` (with a profile's phone), as ``values()`` gives it."""
    return {
        "id": user_id,
        "username": username,
        "first_name": fields.get("first_name", ""),
        "last_name": fields.get("last_name", ""),
        "email": fields.get("email", ""),
        "password": password,
        "date_joined": datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC),
        "is_active": True,
        "phone": fields.get("phone"),
        "groups": fields.get("groups", []),
    }


def line_of(row: dict[str, Any]) -> dict[str, Any]:
    """What an operator's export script writes for a row: the contract's line."""
    line = {
        "id": str(row["id"]),
        "email": row["email"] or None,
        "email_verified": bool(row["email"]),
        "phone_number": row["phone"],
        "phone_number_verified": row["phone"] is not None,
        "given_name": row["first_name"] or None,
        "family_name": row["last_name"] or None,
        "preferred_username": row["username"],
        "groups": row["groups"],
        "created_at": row["date_joined"].isoformat(),
        "password": row["password"],
    }
    return {key: value for key, value in line.items() if value is not None}


def write_lines(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture
def environ(base_environ: dict[str, str], settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A database of the test's own; the suite's keys (``settings`` makes them)."""
    with own_database(tmp_path) as url:
        upgrade(url)
        yield {**base_environ, "IDP_DATABASE_URL": url, "HOME": str(tmp_path)}


@pytest.fixture
def site(environ: dict[str, str]) -> Iterator[TestClient]:
    with running_app(environ) as client:
        yield client


def import_file(environ: dict[str, str], path: Path, *flags: str) -> tuple[dict[str, int], list[str], int]:
    result = run_idp(environ, "users", "import", str(path), *flags)
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout), result.stderr.splitlines(), result.returncode


def import_on_a_terminal(environ: dict[str, str], path: Path, *flags: str) -> tuple[dict[str, int], str]:
    """``idp users import`` with a terminal for its standard error, as an operator runs it: its
    summary, and what the terminal showed."""
    controller, terminal = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")} | environ
    try:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "idp"), "users", "import", str(path), *flags],
            env=env,
            cwd=env["HOME"],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
        )
        os.close(terminal)
        shown = b""
        while select_fds([controller], [], [], 0)[0] and (chunk := _read_terminal(controller)):
            shown += chunk
    finally:
        os.close(controller)
    assert result.returncode == 0, shown
    return json.loads(result.stdout), shown.decode()


def _read_terminal(controller: int) -> bytes:
    """What the terminal holds still; nothing once its other end closed and all was read."""
    try:
        return os.read(controller, 4096)
    except OSError:
        return b""


def export(environ: dict[str, str]) -> list[dict[str, Any]]:
    result = run_idp(environ, "users", "export")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def browser(site: TestClient) -> TestClient:
    """A browser of its own (its own cookies) on the running app."""
    return TestClient(site.app, base_url=TEST_ISSUER, follow_redirects=False)


def stored(site: TestClient, user_id: str) -> User:
    with ctx_of(site).db() as db:
        user = db.get(User, user_id)
        assert user is not None
        return user


class SiteKeys(jwt.PyJWKClient):
    """PyJWT's JWKS client, reading /jwks.json from the in-process app."""

    def __init__(self, site: TestClient) -> None:
        super().__init__(TEST_ISSUER + "/jwks.json")
        self.site = site

    def fetch_data(self) -> Any:
        return self.site.get("/jwks.json").json()


def subject(site: TestClient, id_token: str, audience: str) -> str:
    key = SiteKeys(site).get_signing_key_from_jwt(id_token).key
    claims = jwt.decode(id_token, key, algorithms=["RS256"], issuer=TEST_ISSUER, audience=audience)
    return str(claims["sub"])


def django_people() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Two people per hash format (one signs in in a browser, one in an app), one with an
    unusable password, one known by phone alone; their lines and their passwords by id."""
    rows, passwords = [], {}
    for number, scheme in enumerate(FORMATS):
        for way in ("web", "app"):
            user_id = 10 * (number + 1) + (way == "app")
            password = f"old {scheme} {way} password"
            rows.append(
                auth_user_row(
                    user_id,
                    f"{scheme}-{way}",
                    make_password(password, scheme),
                    email=f"{scheme}.{way}@example.com",
                    first_name="Old",
                    last_name=scheme,
                    groups=["staff"] if way == "web" else [],
                )
            )
            passwords[str(user_id)] = password
    rows.append(auth_user_row(90, "nopass", make_password(None), email="nopass@example.com"))
    rows.append(auth_user_row(91, "phoney", make_password("phone only pw", "pbkdf2_sha256"), phone="+4915112345678"))
    return [line_of(row) for row in rows], passwords


def test_imported_people_sign_in_with_their_old_passwords_keep_their_ids_and_are_rehashed(environ, site, tmp_path):
    lines, passwords = django_people()
    summary, errors, status = import_file(environ, write_lines(tmp_path / "people.jsonl", lines))
    assert (summary, errors, status) == ({"imported": len(lines), "unchanged": 0, "failed": 0}, [], 0)
    app = add_client(site)
    for number, scheme in enumerate(FORMATS):
        web, native = str(10 * (number + 1)), str(10 * (number + 1) + 1)
        before = stored(site, web).password_hash
        assert (
            before is not None
            and (before if scheme != "argon2" else "argon2" + before) == lines[2 * number]["password"]
        )

        # A wrong password is refused as any wrong password is: counted and audited as one.
        assert_generic_failure(post_login(browser(site), f"{scheme}.web@example.com", "not the old password"))
        assert stored(site, web).failed_sign_ins == 1 and stored(site, web).password_hash == before
        with ctx_of(site).db() as db:
            failure = db.scalars(select(AuditEvent).filter_by(event="sign_in", user_id=web)).one()
        assert failure.outcome == "failure" and failure.detail == {"method": "password", "reason": "wrong_password"}

        issued = tokens_for(browser(site), app, Person(web, f"{scheme}.web@example.com", passwords[web]))
        assert subject(site, issued["id_token"], app.client_id) == web
        after = stored(site, web)
        assert after.password_hash is not None and after.password_hash.startswith("$argon2id$v=19$m=65536")
        assert after.failed_sign_ins == 0

        challenge, verifier = begin(site, app, f"{scheme}.app@example.com")
        refused = post(site, app, auth_session=challenge["auth_session"], password="not the old password")
        assert assert_error(refused, "insufficient_authorization", 403)["error_description"] == "the sign-in failed"
        code = authorization_code(post(site, app, auth_session=challenge["auth_session"], password=passwords[native]))
        assert subject(site, tokens(site, app, code, verifier)["id_token"], app.client_id) == native
        assert (stored(site, native).password_hash or "").startswith("$argon2id$")

    # The old password, now kept as argon2id, still signs in.
    assert post_login(browser(site), "pbkdf2_sha256.web@example.com", passwords["10"]).status_code == 303
    phoney = stored(site, "91")
    assert (phoney.email, phoney.phone, phoney.phone_verified) == (None, "+4915112345678", True)
    assert phoney.password_hash == lines[-1]["password"], "the one person yet to sign in keeps an old hash"
    with ctx_of(site).db() as db:
        assert set(db.scalars(select(UserGroup.user_id).where(UserGroup.name == "staff"))) == {
            "10",
            "20",
            "30",
            "40",
            "50",
        }


def test_an_unusable_password_signs_in_with_no_password(environ, site, tmp_path):
    lines, _ = django_people()
    assert lines[-2]["password"].startswith("!")
    import_file(environ, write_lines(tmp_path / "people.jsonl", lines[-2:]))
    assert stored(site, "90").password_hash is None
    for password in ("", "!", lines[-2]["password"], lines[-2]["password"][1:]):
        assert_generic_failure(post_login(browser(site), "nopass@example.com", password or "x"))
    app = add_client(site)
    challenge, _ = begin(site, app, "nopass@example.com")
    refused = post(site, app, auth_session=challenge["auth_session"], password=lines[-2]["password"])
    assert_error(refused, "insufficient_authorization", 403)


def older_pbkdf2(password: str, iterations: int) -> str:
    """A hash as an older Django release wrote it, with fewer rounds than today's default."""
    hasher = django_hashers()["pbkdf2_sha256"]
    return str(hasher.encode(password, hasher.salt(), iterations))


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every hash the process verifies, as its kind and work factor (libpass's Django hashers with
    the rounds the hash names, argon2-cffi with its parameters) beside the hash itself: what a
    sign-in costs, counted rather than timed, so that a loaded machine cannot blur it."""
    done: list[tuple[str, str]] = []
    hashers = (django_pbkdf2_sha256, django_pbkdf2_sha1, django_bcrypt_sha256, django_bcrypt)
    # Taken before any is replaced: django_pbkdf2_sha1 inherits django_pbkdf2_sha256's.
    originals = [(hasher, hasher.verify) for hasher in hashers]
    for hasher, original in originals:

        def counted(secret: str, hash: str, verify: Any = original, name: str = hasher.name) -> bool:
            rounds = re.search(r"\$(\d+)\$", hash)
            assert rounds is not None, hash
            done.append((f"{name} {int(rounds[1])}", hash))
            return bool(verify(secret, hash))

        monkeypatch.setattr(hasher, "verify", counted)
    argon2_verify = PasswordHasher.verify

    def argon2_counted(self: PasswordHasher, hash: str, password: str) -> bool:
        parameters = extract_parameters(hash)
        done.append((f"argon2 m={parameters.memory_cost},t={parameters.time_cost},p={parameters.parallelism}", hash))
        return argon2_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", argon2_counted)
    return done


def test_a_wrong_password_costs_the_same_for_every_account_while_imported_hashes_are_kept(
    environ, site, tmp_path, verifications
):
    """An export mixes work factors (a dormant person keeps the hash of the Django release they
    last signed in under), and a hash's cost is its work factor's. Checked against one decoy hash,
    an unknown address cost that decoy's work and an imported person their own: the answer's time
    told them apart. Every sign-in verifies one hash of each kind kept, the person's own or a decoy
    idp made, and one argon2 hash, until the imported people have signed in."""
    people = [
        ("today@example.com", "today's password", make_password("today's password")),
        ("also.today@example.com", "also today's password", make_password("also today's password")),
        ("older@example.com", "an older password", older_pbkdf2("an older password", 10_000)),
        ("sha1@example.com", "a sha1 password", make_password("a sha1 password", "pbkdf2_sha1")),
        ("bcrypt@example.com", "a bcrypt password", make_password("a bcrypt password", "bcrypt")),
        ("sha256@example.com", "a bcrypt_sha256 password", make_password("a bcrypt_sha256 password", "bcrypt_sha256")),
    ]
    lines = [
        {"id": str(number), "email": email, "email_verified": True, "password": hashed}
        for number, (email, _, hashed) in enumerate(people)
    ]
    path = write_lines(tmp_path / "people.jsonl", lines)
    classes = "bcrypt$$2b$05$, bcrypt_sha256$$2b$05$, pbkdf2_sha1$20000$, pbkdf2_sha256$10000$, pbkdf2_sha256$20000$"
    kept = "one argon2 hash and one hash of each cost class kept from imports"
    kept += f" (5, until nobody keeps a hash of one): {classes}"
    _, shown = import_on_a_terminal(environ, path, "--dry-run")
    assert f"each password sign-in would verify {kept}" in shown
    summary, shown = import_on_a_terminal(environ, path)
    assert summary == {"imported": len(lines), "unchanged": 0, "failed": 0}
    assert f"each password sign-in verifies {kept}" in shown
    made = ("users", "create", "--email", "made@example.com", "--password", "a password idp hashed", "--verified")
    run_idp(environ, *made, check=True)
    hashes = {email: hashed for email, _, hashed in people}

    def cost(address: str) -> list[str]:
        verifications.clear()
        assert_generic_failure(post_login(browser(site), address, "not anyone's password"))
        return sorted(kind for kind, _ in verifications)

    unknown = cost("nobody@example.com")
    addresses = [*hashes, "made@example.com"]
    assert {address: cost(address) for address in addresses} == dict.fromkeys(addresses, unknown)
    assert not {hashed for _, hashed in verifications} & set(hashes.values()), "a decoy is nobody's hash"
    argon2 = [kind for kind in unknown if kind.startswith("argon2 ")]
    assert len(argon2) == 1 and len(unknown) == 1 + 5, "two people share today's pbkdf2"

    run_idp(environ, "users", "delete", "2", check=True)
    assert len(cost("nobody@example.com")) == 1 + 5, "until the hourly cleanup"
    run_idp(environ, "cleanup", check=True)
    assert len(cost("nobody@example.com")) == 1 + 4, "nobody keeps the older pbkdf2 any more"

    for email, password, _ in people:
        if email != "older@example.com":
            assert post_login(browser(site), email, password).status_code == 303, email
    assert cost("nobody@example.com") == argon2, "one argon2 once they all signed in"


def test_bad_lines_are_named_and_nothing_of_them_is_written(environ, site, tmp_path):
    good = {"id": "1", "email": "one@example.com", "password": make_password("first password")}
    lines: list[dict[str, Any] | str] = [
        good,
        "{not json",
        {"id": 2, "email": "two@example.com"},
        {"id": "3"},
        {"id": "4", "email": "not an address"},
        {"id": "5", "phone_number": "09121234567"},
        {"id": "6", "email": "six@example.com", "password": "md5$salt$hash"},
        {"id": "7", "email": "seven@example.com", "created_at": "last tuesday"},
        {"id": "8", "email": "ONE@example.com"},
        {"id": "1", "email": "again@example.com"},
        {"id": "9", "email": "nine@example.com", "groups": "staff"},
        {"id": str(uuid.uuid4()), "email": "uuid@example.com", "preferred_username": "u", "zoneinfo": "Asia/Tehran"},
        "",
        {"id": "x" * 65, "email": "long@example.com"},
        {"id": "15", "email": "fifteen@example.com", "picture": "http://pictures.example/a.png"},
        {"id": "16", "email": "sixteen@example.com", "address": "Berlin"},
        {"id": "17", "email": "seventeen@example.com", "address": {"locality": "Ber\u0007lin"}},
        {"id": "18\n", "email": "eighteen@example.com"},
        {"id": "19", "email": "nineteen@example.com", "locale": "fa_IR"},
        {"id": "20", "email": "twenty@example.com", "locale": "de-"},
    ]
    summary, errors, status = import_file(environ, write_lines(tmp_path / "people.jsonl", lines))
    assert status == 2
    assert summary == {"imported": 2, "unchanged": 0, "failed": 17}
    assert errors == [
        "line 2: not a JSON object",
        "line 3: id: required, a string",
        "line 4: email or phone_number: one is required",
        "line 5: email: that is not an email address",
        "line 6: phone_number: not a number",
        "line 7: password: 'md5' is not a hash format idp reads",
        "line 8: created_at: not an RFC 3339 time (2024-05-01T12:00:00Z)",
        "line 9: email: already on line 1",
        "line 10: id: already on line 1",
        "line 11: groups: a list of strings",
        "line 14: id: at most 64 printable characters without spaces",
        "line 15: picture: not https",
        "line 16: address: not an object, parts formatted, street_address, locality, region, postal_code, country",
        "line 17: address: control characters, part locality",
        "line 18: id: at most 64 printable characters without spaces",
        "line 19: locale: not a BCP 47 language tag of at most 16 characters (fa-IR)",
        "line 20: locale: not a BCP 47 language tag of at most 16 characters (fa-IR)",
    ]
    people = export(environ)
    assert sorted(person["email"] for person in people) == ["one@example.com", "uuid@example.com"]

    clash = {"id": "20", "email": "other@example.com", "preferred_username": "u"}
    summary, errors, status = import_file(environ, write_lines(tmp_path / "clash.jsonl", [clash]))
    assert (summary, errors, status) == (
        {"imported": 0, "unchanged": 0, "failed": 1},
        ["line 1: preferred_username: already another person's"],
        2,
    )


def pbkdf2_of_length(length: int) -> str:
    """A well-formed Django pbkdf2 hash of ``length`` characters: Django and libpass take a salt of
    any length."""
    hasher = django_hashers()["pbkdf2_sha256"]
    short = str(hasher.encode("a password", "s"))
    return str(hasher.encode("a password", "s" * (1 + length - len(short))))


def test_every_field_at_its_longest_fits_and_a_longer_hash_is_refused_as_a_bad_line(environ, tmp_path):
    """On PostgreSQL a value longer than its column fails the whole insert: a hash of 256
    characters (a long salt is well-formed) made the import crash with a traceback, its batch's
    good lines lost and the rest of the file never read, unaudited. Such a line is refused as any
    bad line is; a line with every field at the most idp takes is imported whole."""
    longest = {
        "id": "9" * 64,
        "email": "e" * 64 + "@" + "d" * 252 + ".de",
        "email_verified": True,
        "phone_number": "+4915112345678",
        "name": "ن" * 200,
        "given_name": "é" * 200,
        "family_name": "f" * 200,
        "preferred_username": "u" * 150,
        "locale": "abcdefgh-1234567",
        "zoneinfo": "America/Argentina/ComodRivadavia",
        "picture": "https://pictures.example/" + "p" * 1975,
        "groups": ["g" * 150],
        "created_at": "9999-12-31T23:59:59Z",
        "password": pbkdf2_of_length(255),
    }
    assert len(longest["email"]) == 320 and len(longest["picture"]) == 2000
    lines: list[dict[str, Any] | str] = [
        {"id": "1", "email": "one@example.com"},
        {"id": "2", "email": "two@example.com", "password": pbkdf2_of_length(256)},
        longest,
        {"id": "4", "email": "four@example.com"},
    ]
    summary, errors, status = import_file(environ, write_lines(tmp_path / "people.jsonl", lines))
    assert (summary, errors, status) == (
        {"imported": 3, "unchanged": 0, "failed": 1},
        ["line 2: password: at most 255 characters"],
        2,
    )
    exported = {person["id"]: person for person in export(environ)}
    assert sorted(exported) == sorted(["1", longest["id"], "4"])
    assert {key: exported[longest["id"]][key] for key in longest} == longest
    (event,) = admin_actions(environ)
    assert event["detail"] == {"command": "users import", "options": [], **summary}


def test_a_hash_costlier_than_any_django_releases_is_refused_as_a_bad_line(environ, tmp_path):
    """Every password sign-in verifies a hash of each imported cost class: one line of pbkdf2 at
    the format's most rounds would have made each take hours, and the import hang making its
    decoy. Such hashes are refused, and parsed only: the import takes no time over them."""
    cheap_pbkdf2 = make_password("a password")
    cheap_bcrypt = make_password("a password", "bcrypt")
    cheap_argon2 = make_password("a password", "argon2")
    lines: list[dict[str, Any] | str] = [
        {"id": "1", "email": "one@example.com", "password": cheap_pbkdf2.replace("$20000$", "$4294967295$", 1)},
        {"id": "2", "email": "two@example.com", "password": cheap_bcrypt.replace("$05$", "$31$", 1)},
        {"id": "3", "email": "three@example.com", "password": cheap_argon2.replace("m=8192,", "m=4194304,", 1)},
        {"id": "4", "email": "four@example.com", "password": cheap_pbkdf2.replace("$20000$", "$1200000$", 1)},
        {"id": "5", "email": "five@example.com", "password": cheap_bcrypt.replace("$05$", "$12$", 1)},
    ]
    summary, errors, status = import_file(environ, write_lines(tmp_path / "people.jsonl", lines))
    assert (summary, errors, status) == (
        {"imported": 2, "unchanged": 0, "failed": 3},
        [
            "line 1: password: pbkdf2_sha256 of a work factor of at most 2000000",
            "line 2: password: bcrypt of a work factor of at most 13",
            "line 3: password: argon2 of at most 262144 KiB and 16 passes",
        ],
        2,
    )


def test_the_picture_and_the_address_are_imported_exported_and_imported_again_unchanged(environ, site, tmp_path):
    address = {"formatted": "1 Main St, Berlin", "street_address": "1 Main St", "locality": "Berlin"}
    line = {"id": "p1", "email": "pictured@example.com", "picture": "https://pictures.example/p1.png"}
    path = write_lines(tmp_path / "people.jsonl", [{**line, "address": address}])
    assert import_file(environ, path)[0] == {"imported": 1, "unchanged": 0, "failed": 0}
    [exported] = [person for person in export(environ) if person["id"] == "p1"]
    assert exported["picture"] == line["picture"] and exported["address"] == address
    assert stored(site, "p1").address == address
    assert import_file(environ, path)[0] == {"imported": 0, "unchanged": 1, "failed": 0}
    moved = write_lines(tmp_path / "moved.jsonl", [{**line, "address": {"locality": "Hamburg"}}])
    assert import_file(environ, moved)[0] == {"imported": 1, "unchanged": 0, "failed": 0}
    assert stored(site, "p1").address == {"formatted": "Hamburg", "locality": "Hamburg"}


def test_a_second_run_changes_nothing_and_a_dry_run_writes_nothing(environ, site, tmp_path):
    lines, passwords = django_people()
    path = write_lines(tmp_path / "people.jsonl", lines)
    assert import_file(environ, path, "--dry-run") == ({"imported": len(lines), "unchanged": 0, "failed": 0}, [], 0)
    assert export(environ) == []

    assert import_file(environ, path)[0] == {"imported": len(lines), "unchanged": 0, "failed": 0}
    assert import_file(environ, path)[0] == {"imported": 0, "unchanged": len(lines), "failed": 0}
    assert post_login(browser(site), "bcrypt.web@example.com", passwords["50"]).status_code == 303
    rehashed = stored(site, "50").password_hash
    assert import_file(environ, path)[0] == {"imported": 0, "unchanged": len(lines), "failed": 0}
    assert stored(site, "50").password_hash == rehashed, "a second run never brings an old hash back"

    changed = [{**lines[0], "given_name": "New", "groups": ["staff", "editors"]}, *lines[1:]]
    path = write_lines(tmp_path / "changed.jsonl", changed)
    assert import_file(environ, path, "--dry-run")[0] == {"imported": 1, "unchanged": len(lines) - 1, "failed": 0}
    assert stored(site, "10").given_name == "Old"
    assert import_file(environ, path)[0] == {"imported": 1, "unchanged": len(lines) - 1, "failed": 0}
    assert stored(site, "10").given_name == "New"
    assert next(person for person in export(environ) if person["id"] == "10")["groups"] == ["editors", "staff"]


def admin_actions(environ: dict[str, str]) -> list[dict[str, Any]]:
    printed = run_idp(environ, "audit", "--event", "admin_action").stdout
    return [json.loads(line) for line in printed.splitlines()]


def test_an_import_is_audited_once_with_its_counts_and_a_dry_run_not_at_all(environ, tmp_path):
    lines, _ = django_people()
    path = write_lines(tmp_path / "people.jsonl", [*lines, {"id": "99"}])
    assert import_file(environ, path, "--dry-run")[2] == 2
    assert admin_actions(environ) == []
    assert import_file(environ, path)[2] == 2
    (event,) = admin_actions(environ)
    counts = {"imported": len(lines), "unchanged": 0, "failed": 1}
    assert event["detail"] == {"command": "users import", "options": [], **counts}
    assert event["user_id"] is None and event["user_agent"].startswith("idp command line, operator ")


def test_export_then_import_into_a_fresh_database_gives_the_same_people(environ, site, tmp_path, base_environ):
    lines, passwords = django_people()
    import_file(environ, write_lines(tmp_path / "people.jsonl", lines))
    assert post_login(browser(site), "argon2.web@example.com", passwords["30"]).status_code == 303
    exported = export(environ)
    assert len(exported) == len(lines)
    assert next(person for person in exported if person["id"] == "30")["password"].startswith("argon2$argon2id$")
    assert next(person for person in exported if person["id"] == "90")["password"] == "!"
    assert next(person for person in exported if person["id"] == "20")["created_at"] == "2021-03-04T05:06:07Z"

    (tmp_path / "fresh").mkdir()
    with own_database(tmp_path / "fresh") as url:
        fresh = {**base_environ, "IDP_DATABASE_URL": url}
        path = write_lines(tmp_path / "exported.jsonl", exported)  # type: ignore[arg-type]
        assert import_file(fresh, path) == ({"imported": len(lines), "unchanged": 0, "failed": 0}, [], 0)
        assert export(fresh) == exported
        with running_app(fresh) as there:
            for user_id, email in (("30", "argon2.web@example.com"), ("11", "pbkdf2_sha256.app@example.com")):
                assert post_login(there, email, passwords[user_id]).status_code == 303


def test_phone_only_people_are_made_on_the_command_line(environ):
    made = run_idp(environ, "users", "create", "--phone", "+4915112345678", "--verified")
    assert made.returncode == 0, made.stderr
    (created,) = admin_actions(environ)
    assert created["detail"] == {"command": "users create", "options": ["phone", "verified"]}
    assert created["user_id"] == json.loads(made.stdout)["id"]
    assert created["user_agent"].startswith("idp command line, operator ")
    both = run_idp(environ, "users", "create", "--phone", "+4915112345679", "--email", "both@example.com")
    assert both.returncode == 0, both.stderr
    listed = {person["id"]: person for person in map(json.loads, run_idp(environ, "users", "list").stdout.splitlines())}
    alone = listed[json.loads(made.stdout)["id"]]
    assert alone["email"] is None and alone["phone"] == "+4915112345678" and alone["phone_verified"] is True
    assert listed[json.loads(both.stdout)["id"]]["email"] == "both@example.com"
    for args, said in (
        ([], "idp: --email, --phone or both: an account needs an email address or a phone number\n"),
        (["--phone", "12"], "idp: that phone number cannot be used: not a number\n"),
        (["--phone", "+4915112345678"], "idp: an account with that phone number already exists\n"),
    ):
        refused = run_idp(environ, "users", "create", *args)
        assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", said)


def test_a_person_made_with_a_phone_and_a_password_signs_in_with_them(environ, site):
    """IDP_REQUIRE_VERIFIED_EMAIL (on by default) asks for a verified address of people who have
    one; a person with none signs in by the number they verified."""
    phone, password = "+989121234567", "a phone person's passphrase"
    made = run_idp(environ, "users", "create", "--phone", phone, "--password", password, "--verified")
    assert made.returncode == 0, made.stderr
    response = post_login(browser(site), phone, password)
    assert response.status_code == 303 and response.headers["location"] == "/account", response.text

    unverified = run_idp(environ, "users", "create", "--phone", "+989121234568", "--password", password)
    assert unverified.returncode == 0, unverified.stderr
    refused = post_login(browser(site), "+989121234568", password)
    assert refused.status_code == 400, "a number nobody verified does not sign in without an address"
    args = ("--email", "e@example.com", "--phone", "+989121234569", "--password", password)
    with_email = run_idp(environ, "users", "create", *args)
    assert with_email.returncode == 0, with_email.stderr
    run_idp(environ, "users", "update", json.loads(with_email.stdout)["id"], "--phone-verified", check=True)
    unproven = post_login(browser(site), "+989121234569", password)
    assert unproven.status_code == 400 and "Verify your email address" in unproven.text, "an address must be verified"


def test_the_schema_takes_long_ids_and_keeps_what_was_there(tmp_path):
    """0015 on a database with people and their sessions: nothing is lost, and a UUID fits."""
    with own_database(tmp_path) as url:
        command.upgrade(alembic_config(url), "0012")
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, email, email_verified, phone_verified, disabled, failed_sign_ins, "
                    "created_at, updated_at) VALUES ('a' , 'a@example.com', false, false, false, 0, 1, 1)"
                )
            )
            connection.execute(
                text("INSERT INTO password_history (user_id, password_hash, created_at) VALUES ('a', 'h', 1)")
            )
        upgrade(url)
        long_id = str(uuid.uuid4()) + "-django"
        with engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM password_history")).scalar() == 1
            connection.execute(
                text(
                    "INSERT INTO users (id, email, email_verified, phone_verified, disabled, failed_sign_ins, "
                    "created_at, updated_at) VALUES (:id, 'b@example.com', false, false, false, 0, 1, 1)"
                ),
                {"id": long_id},
            )
            connection.execute(
                text("INSERT INTO password_history (user_id, password_hash, created_at) VALUES (:id, 'h', 1)"),
                {"id": long_id},
            )
        engine.dispose()


def test_an_upgrade_gives_the_hashes_an_earlier_import_kept_their_classes(
    base_environ, settings, tmp_path, verifications
):
    """0023 on a database that keeps hashes of two cost classes, imported before classes were
    recorded: each class gets a decoy, and sign-ins verify one hash of each from the first on."""
    hashes = [make_password("first password"), older_pbkdf2("second password", 10_000), make_password("third one")]
    with own_database(tmp_path) as url:
        command.upgrade(alembic_config(url), "0021")
        engine = create_engine(url)
        with engine.begin() as connection:
            for number, hashed in enumerate(hashes):
                connection.execute(
                    text(
                        "INSERT INTO users (id, email, email_verified, phone_verified, disabled, failed_sign_ins, "
                        "password_hash, created_at, updated_at) "
                        "VALUES (:id, :email, true, false, false, 0, :hash, 1, 1)"
                    ),
                    {"id": str(number), "email": f"{number}@example.com", "hash": hashed},
                )
        engine.dispose()
        upgrade(url)
        with running_app({**base_environ, "IDP_DATABASE_URL": url, "HOME": str(tmp_path)}) as site:
            assert_generic_failure(post_login(browser(site), "nobody@example.com", "not anyone's password"))
    legacy = sorted(kind for kind, hashed in verifications if not kind.startswith("argon2 "))
    assert legacy == ["django_pbkdf2_sha256 10000", "django_pbkdf2_sha256 20000"]
    assert not {hashed for _, hashed in verifications} & set(hashes)
