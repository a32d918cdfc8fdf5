"""The CPU time of one refresh, in-process: the refresh grant and its commit, without HTTP.

    .venv/bin/python bench/refresh_cpu.py [--refreshes 2000] [--rounds 3] [--database-url URL]

Makes a client, a person and a grant with ``openid profile email offline_access`` on a fresh SQLite
file, or in the PostgreSQL database named (give it one of its own: what is made is left there),
then refreshes one chain as the token endpoint does: each refresh in a session of its own, with the
token the previous one returned, committed. It prints the process's CPU time per refresh of each
round and their minimum and median, and, as the yardstick of the same run, the CPU time of the two
RS256 signatures every refresh makes (on a shared machine both grow alike). The audit events the
refreshes queue are written between the rounds, untimed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from idp import audit
from idp.accounts.users import create_user
from idp.context import Context
from idp.migrate import upgrade
from idp.oauth.clients import create_client
from idp.oauth.grants import refresh_token
from idp.security.digests import new_token
from idp.settings import Settings
from idp.storage import Client, Grant, RefreshToken, add_secret, now

SCOPE = "openid profile email offline_access"
WARM_UP = 200


def build(directory: Path, database_url: str | None) -> Context:
    url = database_url or f"sqlite:///{directory}/idp.db"
    environ = {
        "IDP_ISSUER": "http://bench.example",
        "IDP_DATABASE_URL": url,
        "IDP_KEYS_DIR": str(directory / "keys"),
        "IDP_SECRET_KEY": new_token(),
    }
    upgrade(url)
    ctx = Context.build(Settings.from_environ(environ, env_file="/nonexistent"))
    ctx.keystore.ensure()
    return ctx


def first_token(ctx: Context) -> tuple[Client, str]:
    """A client registered for refreshing and the first refresh token of a grant of its."""
    with ctx.db.begin() as db:
        client = create_client(
            db,
            ctx.secret_key,
            name="Bench",
            redirect_uris=["https://rp.example/cb"],
            grant_types=["authorization_code", "refresh_token"],
        ).client
        user = create_user(db, email=f"bench-{new_token()[:8]}@example.com", name="Bench Person", verified=True)
        stamp = now()
        grant = Grant(
            id=new_token()[:32],
            client_id=client.id,
            user_id=user.id,
            scope=SCOPE,
            auth_time=stamp,
            amr=["pwd"],
            created_at=stamp,
        )
        db.add(grant)
        db.flush()
        _, token = add_secret(db, RefreshToken, 86_400, grant_id=grant.id, scope=SCOPE)
        db.expunge(client)
    return client, token


def refresher(ctx: Context, client: Client) -> Callable[[str], str]:
    """One refresh as the token endpoint makes it; the token it returns."""
    issuer = ctx.token_issuer
    origin = audit.Origin("127.0.0.1", "bench")

    def refresh(token: str) -> str:
        with ctx.db() as db:
            audit.set_origin(db, origin)
            form = {"grant_type": "refresh_token", "refresh_token": token}
            body = refresh_token.issue(db, issuer, client, form)
            db.commit()
        return str(body["refresh_token"])

    return refresh


def signatures_ms(count: int) -> float:
    """CPU milliseconds of two RSA-2048 PKCS#1 v1.5 SHA-256 signatures, as RS256 makes them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = b"x" * 700
    started = time.process_time()
    for _ in range(count):
        key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return (time.process_time() - started) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refreshes", type=int, default=2000, help="refreshes a round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--database-url", help="a PostgreSQL database of its own (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idp-refresh-") as directory:
        ctx = build(Path(directory), args.database_url)
        try:
            client, token = first_token(ctx)
            refresh = refresher(ctx, client)
            for _ in range(WARM_UP):
                token = refresh(token)
            ctx.audit_queue.write()
            rounds = []
            for _ in range(args.rounds):
                started = time.process_time()
                for _ in range(args.refreshes):
                    token = refresh(token)
                rounds.append((time.process_time() - started) / args.refreshes * 1000)
                ctx.audit_queue.write()
        finally:
            ctx.close()
    database = "PostgreSQL" if args.database_url else "SQLite"
    each = " ".join(f"{value:.3f}" for value in rounds)
    print(f"refresh grant on {database}, CPU ms per refresh, {args.refreshes} a round: {each}")
    print(f"min {min(rounds):.3f} ms, median {statistics.median(rounds):.3f} ms")
    print(f"two RS256 signatures alone: {signatures_ms(args.refreshes // 4):.3f} ms")


if __name__ == "__main__":
    main()
