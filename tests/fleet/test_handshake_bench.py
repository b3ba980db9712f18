"""The handshake benchmark runs end to end (one short round: this checks it works and
measures what it says, not how fast anything is)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import needs
from tinyward.bench.handshake import run_handshake


@pytest.mark.slow
@needs(shutil.which("openssl") is not None, "needs the openssl command")
def test_bench_handshake_measures_both_servers_with_the_same_tls() -> None:
    result = run_handshake(rounds=1, seconds=1.0)
    assert [r.server for r in result.rounds] == ["openssl", "fleet"]
    for done in result.rounds:
        assert done.handshakes > 0 and done.seconds > 0
        assert done.server_cpu_seconds >= 0  # 10 ms clock ticks: may read 0, never less
    # Both servers negotiated the same TLS 1.3 parameters with the same client.
    assert result.negotiated["openssl"] == result.negotiated["fleet"]
    assert any("TLSv1.3" in line for line in result.negotiated["fleet"])
