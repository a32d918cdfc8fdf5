"""What the machine itself can do, measured in the same run: RSA-2048 signatures and argon2 hashes.

These are the yardsticks of the targets: a token request is mostly one RS256 signature, a password
sign-in mostly one argon2 verification, so the provider is judged against the machine's own rate
of each rather than against absolute numbers that depend on the hardware.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

# openssl speed's summary line: "rsa 2048 bits 0.000246s 0.000016s   4066.0  60855.0"
_RSA_LINE = re.compile(r"^rsa\s*2048 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+[\d.]+", re.MULTILINE)


@dataclass(frozen=True)
class Rate:
    per_second: float
    how: str


def rsa_signing_rate(seconds: int, processes: int) -> Rate:
    """RSA-2048 signatures a second: ``openssl speed``, or cryptography's sign timed here without it."""
    openssl = shutil.which("openssl")
    if openssl is not None:
        command = [
            openssl,
            "speed",
            "-seconds",
            str(seconds),
            *(["-multi", str(processes)] if processes > 1 else []),
            "rsa2048",
        ]
        result = subprocess.run(  # noqa: S603 - openssl from PATH with fixed arguments
            command, capture_output=True, text=True, timeout=60 + 10 * seconds, check=False
        )
        found = _RSA_LINE.findall(result.stdout)
        if result.returncode == 0 and found:
            return Rate(float(found[-1]), "openssl " + " ".join(command[1:]))
    with ProcessPoolExecutor(processes) as pool:
        rates = list(pool.map(_sign_for, [seconds] * processes))
    return Rate(sum(rates), f"cryptography RSA-2048 PKCS#1 v1.5 SHA-256 sign, {processes} process(es)")


def _sign_for(seconds: float) -> float:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    count = 0
    started = time.perf_counter()
    while time.perf_counter() < started + seconds:
        key.sign(b"header.payload", padding.PKCS1v15(), hashes.SHA256())
        count += 1
    return count / (time.perf_counter() - started)


@dataclass(frozen=True)
class HashRate:
    per_second: float
    cpu_seconds_per_hash: float
    processes: int


def argon2_rate(seconds: float, processes: int) -> HashRate:
    """Hashes a second with the project's own hasher; one process is pinned to one core.

    argon2id with more than one lane runs a thread per lane, so a single unpinned process would
    borrow the other cores: pinning makes "one core" mean one core. The CPU time per hash counts
    every thread, the same way the server's CPU time is counted.
    """
    cores = sorted(os.sched_getaffinity(0))
    pins = [cores[0]] if processes == 1 else [None] * processes
    with ProcessPoolExecutor(processes) as pool:
        results = list(pool.map(_hash_for, [seconds] * processes, pins))
    count = sum(n for n, _, _ in results)
    cpu = sum(c for _, c, _ in results)
    return HashRate(sum(n / elapsed for n, _, elapsed in results), cpu / count, processes)


def _hash_for(seconds: float, core: int | None) -> tuple[int, float, float]:
    """Hashes made, CPU seconds spent on them, and the wall-clock seconds they took."""
    from idp.accounts.passwords import hash_password

    if core is not None:
        os.sched_setaffinity(0, {core})
    hash_password("warm up the allocator")
    count = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    while time.perf_counter() < started + seconds:
        hash_password("correct horse battery staple")
        count += 1
    return count, time.process_time() - cpu_started, time.perf_counter() - started
