"""`tinyward demo` runs end to end and every attack is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_exits_zero_with_every_attack_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "tinyward", "demo", "--duration", "12",
                           "--interval", "0.5"], capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "attacks refused: 11 of 11" in done.stdout
    assert "NOT REFUSED" not in done.stdout and "NOT VERIFIED" not in done.stdout
