"""The operator's log: one line per event, rate-limited (a flood cannot fill the disk, and
the log says how much it left out), nothing but fixed words, addresses and ID prefixes."""

from __future__ import annotations

import logging

import pytest

from tinyward.fleet.oplog import OperatorLog

DEVICE = "3f9a61c2" + "0" * 56


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _log(caplog: pytest.LogCaptureFixture, clock: Clock) -> OperatorLog:
    logger = logging.getLogger("tinyward.fleet.access.test")
    caplog.set_level(logging.INFO, logger=logger.name)
    return OperatorLog(rate=10.0, burst=5, clock=clock, logger=logger)


def test_lines_say_what_happened_without_the_full_id(caplog: pytest.LogCaptureFixture) -> None:
    oplog = _log(caplog, Clock())
    oplog.connection("device", "192.0.2.7", "accepted", DEVICE)
    oplog.refusal("device", "192.0.2.7", "replay", device=DEVICE, status=409)
    oplog.refusal("device", "198.51.100.4", "tls_handshake_failed")
    assert [r.getMessage() for r in caplog.records] == [
        "connection listener=device peer=192.0.2.7 device=3f9a61c2 outcome=accepted",
        "refused listener=device peer=192.0.2.7 device=3f9a61c2 status=409 reason=replay",
        "refused listener=device peer=198.51.100.4 reason=tls_handshake_failed"]


def test_flood_is_rate_limited_and_the_gap_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    oplog = _log(caplog, clock)
    for _ in range(10_000):  # a flood of refused handshakes within one instant
        oplog.refusal("device", "203.0.113.9", "tls_handshake_failed")
    assert len(caplog.records) == 5  # the burst, then nothing
    clock.now += 1.0  # 10 lines per second come back
    oplog.refusal("device", "203.0.113.9", "tls_handshake_failed")
    assert caplog.records[-1].getMessage().endswith("suppressed=9995")
    assert len(caplog.records) == 6


def test_an_odd_peer_string_cannot_forge_a_line(caplog: pytest.LogCaptureFixture) -> None:
    oplog = _log(caplog, Clock())
    oplog.connection("device", "1.2.3.4\nrefused listener=admin peer=6.6.6.6", "accepted")
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "peer=? " in record.getMessage()
