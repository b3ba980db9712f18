"""Lockout policy and the readout gate: brute force is slow, the owner always gets back in."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyward.trust.lockout import LockedOut, LockoutPolicy, LockoutState, begin_attempt
from tinyward.trust.readout import NoCredential, ReadoutGate, WeakPin, WrongCode
from tinyward.trust.rot import FileRootOfTrust
from tinyward.trust.storage import ProtectedStorage


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def storage(tmp_path: Path) -> ProtectedStorage:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rot_file = tmp_path / "root.key"
    rot = (
        FileRootOfTrust(rot_file, tmp_path / "c")
        if rot_file.exists()
        else FileRootOfTrust.create(rot_file, tmp_path / "c")
    )
    return ProtectedStorage(tmp_path / "s", rot)


def test_delays_double_after_free_attempts_and_are_capped() -> None:
    policy = LockoutPolicy(free_attempts=5, base_delay=60, max_delay=3600)
    assert [policy.delay_after(n) for n in range(1, 13)] == [
        0, 0, 0, 0, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_attempts_per_hour_is_bounded() -> None:
    assert LockoutPolicy().max_attempts_within(3600) == 10


def test_locked_out_means_code_not_even_checked() -> None:
    policy = LockoutPolicy(free_attempts=1, base_delay=10, max_delay=10)
    state = begin_attempt(LockoutState(), policy, now=0)
    with pytest.raises(LockedOut) as info:
        begin_attempt(state, policy, now=5)
    assert info.value.wait_seconds == pytest.approx(5)
    assert begin_attempt(state, policy, now=10).failures == 2


@given(st.lists(st.floats(min_value=0, max_value=50), max_size=60))
def test_simulated_attacker_never_beats_the_policy(gaps: list[float]) -> None:
    policy = LockoutPolicy(free_attempts=3, base_delay=2, max_delay=16)
    state, now, checked = LockoutState(), 0.0, 0
    for gap in gaps:
        now += gap
        try:
            state = begin_attempt(state, policy, now)
            checked += 1
        except LockedOut:
            pass
    assert checked <= policy.max_attempts_within(now)


def test_pin_gate_wrong_then_right(tmp_path: Path) -> None:
    clock = Clock()
    gate = ReadoutGate(storage(tmp_path), "dev", clock)
    pin = gate.enrol_pin()
    assert len(pin) == 8 and pin.isdigit()
    with pytest.raises(WrongCode):
        gate.attempt("00000000" if pin != "00000000" else "11111111")
    gate.attempt(pin)
    assert gate.status().failures == 0


def test_lockout_survives_restart(tmp_path: Path) -> None:
    clock = Clock()
    policy = LockoutPolicy(free_attempts=2, base_delay=30, max_delay=60)
    gate = ReadoutGate(storage(tmp_path), "dev", clock)
    pin = gate.enrol_pin("482913", policy)
    for _ in range(2):
        with pytest.raises(WrongCode):
            gate.attempt("000000")
    # A new process (new objects over the same folder) is still locked out ...
    reborn = ReadoutGate(storage(tmp_path), "dev", clock)
    with pytest.raises(LockedOut):
        reborn.attempt(pin)
    # ... and the owner gets in once the wait has passed.
    clock.now += 30
    reborn.attempt(pin)


def test_attempt_counted_before_check(tmp_path: Path) -> None:
    """A crash during the comparison must not undo the count: state is persisted first."""
    clock = Clock()
    store = storage(tmp_path)
    gate = ReadoutGate(store, "dev", clock)
    gate.enrol_pin("482913", LockoutPolicy(free_attempts=1, base_delay=30, max_delay=30))

    def crash(*_: object) -> bool:
        raise KeyboardInterrupt  # stands in for SIGKILL in the middle of the check

    gate._code_matches = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        gate.attempt("482913")
    assert ReadoutGate(store, "dev", clock).status().failures == 1
    with pytest.raises(LockedOut):
        ReadoutGate(store, "dev", clock).attempt("482913")


def test_totp_accepts_current_code_once(tmp_path: Path) -> None:
    clock = Clock()
    gate = ReadoutGate(storage(tmp_path), "dev", clock)
    uri = gate.enrol_totp()
    totp = pyotp.parse_uri(uri)
    code = totp.at(clock.now)
    gate.attempt(code)
    with pytest.raises(WrongCode):  # replay of the same code
        gate.attempt(code)
    clock.now += 30
    gate.attempt(totp.at(clock.now))


def test_totp_wrong_and_stale_codes_refused(tmp_path: Path) -> None:
    clock = Clock()
    gate = ReadoutGate(storage(tmp_path), "dev", clock)
    totp = pyotp.parse_uri(gate.enrol_totp())
    with pytest.raises(WrongCode):
        gate.attempt(totp.at(clock.now - 300))


def test_no_default_credential(tmp_path: Path) -> None:
    with pytest.raises(NoCredential):
        ReadoutGate(storage(tmp_path), "dev").attempt("000000")


@pytest.mark.parametrize("pin", ["123", "000000", "111222", "12ab56"])
def test_weak_owner_pins_refused(tmp_path: Path, pin: str) -> None:
    with pytest.raises(WeakPin):
        ReadoutGate(storage(tmp_path), "dev").enrol_pin(pin)


def test_two_devices_get_different_credentials(tmp_path: Path) -> None:
    a = ReadoutGate(storage(tmp_path / "a"), "a").enrol_totp()
    b = ReadoutGate(storage(tmp_path / "b"), "b").enrol_totp()
    assert pyotp.parse_uri(a).secret != pyotp.parse_uri(b).secret
