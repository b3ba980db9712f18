"""The dashboard's login rules without HTTP: password hash, the readout's lockout, sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyward.fleet.dashboard.auth import (
    LoginGate,
    NoPassword,
    Sessions,
    WeakPassword,
    WrongPassword,
    csrf_ok,
    hash_password,
    password_matches,
)
from tinyward.trust.lockout import LockedOut, LockoutPolicy, LockoutState, begin_attempt

PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_only_an_scrypt_hash_is_kept(tmp_path: Path) -> None:
    gate = LoginGate(tmp_path)
    gate.set_password(PASSWORD)
    stored = (tmp_path / "dashboard" / "password").read_bytes()
    assert PASSWORD.encode() not in stored and stored.startswith(b"scrypt$")
    assert (tmp_path / "dashboard" / "password").stat().st_mode & 0o777 == 0o600
    assert password_matches(stored.decode(), PASSWORD)
    assert not password_matches(stored.decode(), PASSWORD + "x")
    # A fresh salt each time: two hashes of one password differ.
    assert hash_password(PASSWORD, n=2**10) != hash_password(PASSWORD, n=2**10)


def test_a_short_password_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    gate = LoginGate(tmp_path)
    with pytest.raises(WeakPassword):
        gate.set_password("short")
    assert gate.stored() is None
    with pytest.raises(NoPassword):
        gate.attempt("anything at all")


def test_a_damaged_hash_never_matches() -> None:
    good = hash_password(PASSWORD, n=2**10).split("$")
    huge = "$".join([good[0], str(2**80), *good[2:]])
    for stored in ("", "scrypt$1$2", "md5$x$y$z$a$b", "scrypt$16384$8$1$!!$!!", huge):
        assert not password_matches(stored, PASSWORD)


def test_login_lockout_is_the_readouts_rule(tmp_path: Path) -> None:
    """The dashboard's waits are exactly what trust.lockout.begin_attempt gives the readout."""
    clock = Clock()
    policy = LockoutPolicy(free_attempts=3, base_delay=10, max_delay=40)
    gate = LoginGate(tmp_path, clock)
    gate.set_password(PASSWORD, policy)
    readout = LockoutState()
    waits = []
    for _ in range(6):
        readout = begin_attempt(readout, policy, clock.now)  # the readout's rule, one failure
        with pytest.raises(WrongPassword):
            gate.attempt("wrong password guess")
        assert gate.lockout() == readout
        waits.append(gate.wait_seconds())
        if readout.not_before > clock.now:
            with pytest.raises(LockedOut):
                gate.attempt(PASSWORD)  # inside the wait: not even checked, not counted
            assert gate.lockout() == readout
        clock.now = readout.not_before
    assert waits == [0, 0, 10, 20, 40, 40]
    assert gate.attempt(PASSWORD) == gate.stored()
    assert gate.lockout() == LockoutState()  # a success resets the count


def test_locked_out_attempt_checks_nothing_even_the_right_password(tmp_path: Path) -> None:
    clock = Clock()
    gate = LoginGate(tmp_path, clock)
    gate.set_password(PASSWORD, LockoutPolicy(free_attempts=1, base_delay=60, max_delay=60))
    with pytest.raises(WrongPassword):
        gate.attempt("wrong password guess")
    with pytest.raises(LockedOut) as caught:
        gate.attempt(PASSWORD)
    assert caught.value.wait_seconds == 60


def test_lockout_survives_restart(tmp_path: Path) -> None:
    clock = Clock()
    gate = LoginGate(tmp_path, clock)
    gate.set_password(PASSWORD, LockoutPolicy(free_attempts=1, base_delay=60, max_delay=60))
    with pytest.raises(WrongPassword):
        gate.attempt("wrong password guess")
    restarted = LoginGate(tmp_path, clock)  # a new server process reads the same files
    with pytest.raises(LockedOut):
        restarted.attempt(PASSWORD)


def test_a_new_password_resets_the_lockout(tmp_path: Path) -> None:
    clock = Clock()
    gate = LoginGate(tmp_path, clock)
    gate.set_password(PASSWORD, LockoutPolicy(free_attempts=1, base_delay=60, max_delay=60))
    with pytest.raises(WrongPassword):
        gate.attempt("wrong password guess")
    gate.set_password("another long password")
    gate.attempt("another long password")


def test_sessions_expire_when_idle_and_at_their_maximum() -> None:
    clock = Clock(0)
    sessions = Sessions(clock, idle=10, maximum=25)
    token, _ = sessions.create("v1")
    clock.now = 9
    assert sessions.find(token, "v1") is not None
    clock.now = 18
    assert sessions.find(token, "v1") is not None  # used at 9: not idle for 10 s
    clock.now = 26
    assert sessions.find(token, "v1") is None  # past its maximum, however busy
    token, _ = sessions.create("v1")
    clock.now = 37
    assert sessions.find(token, "v1") is None  # idle for 11 s


def test_attack_token_of_a_session_under_an_old_password_is_refused() -> None:
    sessions = Sessions(Clock(0))
    token, _ = sessions.create("old hash")
    assert sessions.find(token, "new hash") is None
    assert sessions.find(token, "old hash") is None  # it is gone, not just hidden
    token, _ = sessions.create("old hash")
    assert sessions.find(token, "damaged \ufffd file") is None  # no error either


def test_the_server_keeps_no_session_token() -> None:
    sessions = Sessions(Clock(0))
    token, session = sessions.create("v")
    kept = repr(sessions._by_digest)
    assert token not in kept and session.csrf in kept


def test_sessions_are_capped_oldest_first() -> None:
    clock = Clock(0)
    sessions = Sessions(clock, capacity=3)
    tokens = []
    for i in range(4):
        clock.now = i
        tokens.append(sessions.create("v")[0])
    assert len(sessions) == 3
    assert sessions.find(tokens[0], "v") is None
    assert all(sessions.find(t, "v") is not None for t in tokens[1:])


def test_csrf_tokens_are_checked() -> None:
    sessions = Sessions(Clock(0))
    _, session = sessions.create("v")
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None) and not csrf_ok(session, "")
    assert not csrf_ok(session, session.csrf[:-1] + ("A" if session.csrf[-1] != "A" else "B"))
    assert not csrf_ok(session, "é" * 5)
    assert sessions.login_token_ok("pre", sessions.login_token("pre"))
    assert not sessions.login_token_ok("other", sessions.login_token("pre"))
    assert not sessions.login_token_ok(None, sessions.login_token("pre"))
    # Another server process signs with another key: its tokens do not pass here.
    assert not Sessions(Clock(0)).login_token_ok("pre", sessions.login_token("pre"))


def test_attack_concurrent_guesses_are_checked_one_at_a_time(tmp_path: Path) -> None:
    """Eight guesses at once inside one lockout window: one is checked, all are counted."""
    from concurrent.futures import ThreadPoolExecutor

    clock = Clock()
    LoginGate(tmp_path, clock).set_password(
        PASSWORD, LockoutPolicy(free_attempts=1, base_delay=60, max_delay=60))

    def guess(i: int) -> str:
        try:
            LoginGate(tmp_path, clock).attempt(f"wrong guess number {i}")
        except WrongPassword:
            return "checked"
        except LockedOut:
            return "locked"
        return "accepted"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(guess, range(8)))
    assert outcomes == ["checked"] + ["locked"] * 7
    assert LoginGate(tmp_path, clock).lockout().failures == 1
