"""The benchmark runs end to end and prints its tables; speed is the benchmark's business, not the suite's.

One very short run: it starts ``idp serve --workers 2`` itself on its own SQLite file, so every
flow it drives (sign-in, code exchange, refresh rotation, introspection, userinfo) must work
without a single error for the tables to be worth reading.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"
SCENARIOS = ("discovery", "jwks", "client_credentials", "refresh_token", "introspection", "userinfo",
             "complete password sign-ins")
TARGETS = ("client_credentials per second / RSA-2048", "password sign-in's server CPU / one argon2 hash",
           "ready on a migrated database", "RSS per worker, idle")


def _rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.timeout(600)
def test_a_short_run_prints_every_scenario_and_target() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "0.5", "--concurrency", "2"],
        capture_output=True, text=True, timeout=580, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(result.stdout)
    for scenario in SCENARIOS:
        per_second, _p50, _p99, done, errors, *_ = rows[scenario]
        assert int(done) > 0 and errors == "0", (scenario, result.stdout)
    for target in TARGETS:
        (row,) = [cells for name, cells in rows.items() if target in name]
        assert row[-1] in ("met", "**not met**"), row
    assert re.search(r"RSA-2048 signatures, 1 core \| [\d,.]+ \|", result.stdout)
    assert re.search(r"argon2 hashes, 1 core \| [\d,.]+ \|", result.stdout)
    assert "load average at end" in result.stdout
