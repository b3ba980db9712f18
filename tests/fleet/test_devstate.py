"""A device's state: an administrator's decision first, then silence, then its own word."""

from __future__ import annotations

import pytest

from tinyward.fleet.devstate import DEVICE_STATES, device_state, quiet_after
from tinyward.fleet.store import DeviceStatus


def _status(received: int, health: str = "ok") -> DeviceStatus:
    return DeviceStatus("aa" * 32, 5, 5, received, received, health, {})


@pytest.mark.parametrize(("status", "revoked", "quarantined", "now", "interval", "want"), [
    (None, False, False, 0, 10.0, "never"),
    (_status(100), False, False, 110, 10.0, "ok"),
    (_status(100, "degraded"), False, False, 110, 10.0, "degraded"),
    (_status(100), False, False, 100 + 40 + 1, 10.0, "quiet"),   # max(30, 10 + 30) = 40
    (_status(100), False, False, 100 + 40, 10.0, "ok"),          # exactly at the bound
    (_status(100), False, False, 10**9, None, "ok"),             # no schedule: never quiet
    (_status(100, "degraded"), False, False, 10**6, 10.0, "quiet"),
    (_status(100), False, True, 10**6, 10.0, "quarantined"),
    (None, True, True, 0, 10.0, "revoked"),
])
def test_state_order(status: DeviceStatus | None, revoked: bool, quarantined: bool,
                     now: int, interval: float | None, want: str) -> None:
    got = device_state(status, revoked=revoked, quarantined=quarantined, now=now,
                       interval=interval)
    assert got == want and got in DEVICE_STATES


def test_quiet_after_is_three_intervals_for_slow_schedules() -> None:
    assert quiet_after(600.0) == 1800.0
    assert quiet_after(1.0) == 31.0
