"""Password hashing keeps its memory bounded under a burst: no more hashes at once than cores.

Each argon2 hash holds 64 MiB while it runs; the benchmark's burst of sign-ins grew a worker to
over 1 GB resident before the bound, and to about 250 MB with it, at the same sign-in rate.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from idp.accounts import passwords


class CountingHasher:
    """Stands in for argon2: slow enough to overlap, and counts how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def _work(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)
        with self.lock:
            self.running -= 1

    def hash(self, password: str) -> str:
        self._work()
        return "$argon2id$counted"

    def verify(self, stored_hash: str, password: str) -> bool:
        self._work()
        return True


def test_no_more_hashes_at_once_than_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = CountingHasher()
    monkeypatch.setattr(passwords, "_hasher", hasher)
    cores = os.cpu_count() or 1
    with ThreadPoolExecutor(4 * cores + 4) as pool:
        jobs = [pool.submit(passwords.hash_password, "a long passphrase") for _ in range(2 * cores + 2)]
        jobs += [pool.submit(passwords.verify_password, "$argon2id$stored", "guess") for _ in range(2 * cores + 2)]
        assert all(job.result() for job in jobs)
    assert hasher.most == cores
