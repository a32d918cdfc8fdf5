"""Moving a Django system's people, timed: ``idp users import``, the same file again, and ``export``.

    .venv/bin/python bench/import_users.py [--people 100000] [--database-url URL]

Writes ``--people`` JSON lines as an operator's export of Django's ``auth_user`` would (an email,
names, a username, a group for one in ten, a phone for one in three, and a password hash in one
of Django's five formats: made once per format with libpass and argon2-cffi and reused, as making
a hundred thousand would take longer than the import), then runs the real ``idp`` script on a
fresh SQLite file, or on the PostgreSQL database named (give it an empty one of its own: the
people are left there), and prints each step's seconds and people a second.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from argon2 import PasswordHasher
from passlib.hash import django_bcrypt, django_bcrypt_sha256, django_pbkdf2_sha1, django_pbkdf2_sha256


def django_hashes() -> list[str]:
    password = "the same old password"
    return [
        django_pbkdf2_sha256.hash(password),
        django_pbkdf2_sha1.hash(password),
        "argon2" + PasswordHasher().hash(password),
        django_bcrypt_sha256.hash(password),
        django_bcrypt.hash(password),
        "!" + secrets.token_urlsafe(30),
    ]


def write_people(path: Path, count: int) -> None:
    hashes = django_hashes()
    with path.open("w") as out:
        for number in range(1, count + 1):
            line = {
                "id": str(number),
                "email": f"person{number}@example.com",
                "email_verified": number % 2 == 0,
                "given_name": "Given",
                "family_name": f"Family{number}",
                "preferred_username": f"person{number}",
                "groups": ["staff"] if number % 10 == 0 else [],
                "created_at": "2020-01-02T03:04:05Z",
                "password": hashes[number % len(hashes)],
            }
            if number % 3 == 0:
                line["phone_number"] = f"+491511{number:07d}"
            out.write(json.dumps(line) + "\n")


def timed(environ: dict[str, str], *args: str, output: Path | None = None) -> float:
    script = Path(sys.executable).parent / "idp"
    started = time.perf_counter()
    with open(output or os.devnull, "w") as out:
        done = subprocess.run(  # noqa: S603 - the idp script beside this interpreter, fixed arguments
            [str(script), *args], env=environ, stdout=out, stderr=subprocess.PIPE, text=True
        )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"idp {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--database-url", help="an empty PostgreSQL database; default: a fresh SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")} | {
            "IDP_DATABASE_URL": args.database_url or f"sqlite:///{work / 'idp.db'}",
            "IDP_KEYS_DIR": str(work / "keys"),
            "IDP_SECRET_KEY": secrets.token_urlsafe(48),
        }
        people = work / "people.jsonl"
        started = time.perf_counter()
        write_people(people, args.people)
        print(f"wrote {args.people} lines in {time.perf_counter() - started:.1f} s")
        timed(environ, "migrate")
        exported = work / "exported.jsonl"
        steps = [
            ("import", timed(environ, "users", "import", str(people))),
            ("import again (all unchanged)", timed(environ, "users", "import", str(people))),
            ("export", timed(environ, "users", "export", output=exported)),
        ]
        with exported.open() as lines:
            assert sum(1 for _ in lines) == args.people, "the export holds everyone"
        backend = environ["IDP_DATABASE_URL"].split(":", 1)[0]
        for name, seconds in steps:
            print(f"{backend:22} {name:30} {seconds:7.1f} s {args.people / seconds:9.0f} people/s")


if __name__ == "__main__":
    main()
