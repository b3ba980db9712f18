"""Counters and lockouts are atomic across processes (issue 12, item 7).

Each attack runs real processes on one device folder, started together at a barrier. With
the lock on, the counts are exact. With ``unsafe_no_lock`` (the lock off) the same attack
succeeds: lost counter updates (reused record versions), failures not counted, several
codes checked in one lockout window, one TOTP code unlocking several sessions.

The "unsafe" tests show that the attack is real, so that the protected tests cannot pass
for the wrong reason (e.g. processes that never overlapped). They repeat their rounds until
the race shows, bounded in count.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tinyward.trust.errors import KeyExists, TrustError
from tinyward.trust.keystore import Keystore, KeyUsage
from tinyward.trust.lockout import LockedOut, LockoutPolicy
from tinyward.trust.readout import ReadoutGate, WrongCode
from tinyward.trust.rot import FileRootOfTrust
from tinyward.trust.storage import ProtectedStorage

# fork: the children inherit the parent's open lock file, which the lock must not confuse
# with its own (trust/_files.py reopens it after a fork).
CTX = multiprocessing.get_context("fork")
T0 = 1_700_000_000.0
PIN = "482913"
WRONG = "000000"
#: What a process meets when another one's unlocked write overtook its own.
RACE_ERRORS = (ValueError, TrustError)


def open_store(base: Path, unsafe: bool = False) -> ProtectedStorage:
    base.mkdir(parents=True, exist_ok=True)
    key = base / "root.key"
    if not key.exists():
        FileRootOfTrust.create(key, base / "counters")
    rot = FileRootOfTrust(key, base / "counters", unsafe_no_lock=unsafe)
    return ProtectedStorage(base / "records", rot, unsafe_no_lock=unsafe)


def _child(
    job: Callable[..., Any], index: int, barrier: Any, results: Any, args: tuple[Any, ...]
) -> None:
    try:
        results.put((index, job(index, barrier, *args)))
    except Exception as error:  # noqa: BLE001 - any failure goes back to the parent
        barrier.abort()  # let the others out of the barrier now
        results.put((index, RaceError(repr(error))))


class RaceError(str):
    """What a child raised, e.g. a counter the lost update left behind its record."""


def run_together(
    count: int, job: Callable[..., Any], *args: Any, errors_ok: bool = False
) -> list[Any]:
    """Run ``job(index, barrier, *args)`` in ``count`` processes; return their results
    (a :class:`RaceError` for a child that raised, allowed only with ``errors_ok``)."""
    barrier = CTX.Barrier(count, timeout=120)
    results = CTX.Queue()
    procs = [
        CTX.Process(target=_child, args=(job, i, barrier, results, args)) for i in range(count)
    ]
    for proc in procs:
        proc.start()
    out = dict(results.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    errors = [v for v in out.values() if isinstance(v, RaceError)]
    assert errors_ok or not errors, errors
    return [out[i] for i in range(count)]


# ---- protected storage: versions are never reused ----------------------------------------

WRITES = 300


def _writer(index: int, barrier: Any, base: Path, unsafe: bool) -> tuple[list[int], list[int]]:
    store = open_store(base, unsafe)
    own: list[int] = []
    shared: list[int] = []
    barrier.wait()
    for i in range(WRITES):
        for name, versions in ((f"own-{index}", own), ("shared", shared)):
            try:
                versions.append(store.write(name, f"{index}-{i}".encode()))
            except RACE_ERRORS:  # without the lock: "counter cannot go back", a lost commit
                versions.append(-1)
    return own, shared


def race_writers(base: Path, unsafe: bool, writers: int = 2) -> tuple[list[int], int, list[int]]:
    """Final own-record versions, final shared version, and every shared version handed out."""
    store = open_store(base)
    results = run_together(writers, _writer, base, unsafe)
    handed_out = [v for _, shared in results for v in shared]
    return [store.version(f"own-{i}") for i in range(writers)], store.version("shared"), handed_out


def test_concurrent_writers_never_reuse_a_version(tmp_path: Path) -> None:
    own, shared, handed_out = race_writers(tmp_path, unsafe=False)
    assert own == [WRITES, WRITES]
    assert shared == 2 * WRITES
    assert sorted(handed_out) == list(range(1, 2 * WRITES + 1)), "a version was handed out twice"
    store = open_store(tmp_path)
    assert store.read("own-0") == f"0-{WRITES - 1}".encode()


def test_unsafe_no_lock_writers_lose_counter_updates(tmp_path: Path) -> None:
    """The attack with the lock off: counters fall behind and versions are reused."""
    for round_ in range(3):
        own, shared, handed_out = race_writers(tmp_path / str(round_), unsafe=True)
        if own != [WRITES, WRITES] or sorted(handed_out) != list(range(1, 2 * WRITES + 1)):
            return
    pytest.fail(f"no update was lost without the lock ({own}, {shared}): the race never showed")


# ---- the readout lockout: every attempt counted, one code per window ---------------------


def _gate(base: Path, unsafe: bool, now: list[float]) -> ReadoutGate:
    return ReadoutGate(open_store(base, unsafe), "dev", lambda: now[0])


def _guesser(index: int, barrier: Any, base: Path, unsafe: bool, tries: int) -> int:
    now = [T0]
    gate = _gate(base, unsafe, now)
    barrier.wait()
    wrong = 0
    for _ in range(tries):
        try:
            gate.attempt(WRONG)
        except WrongCode:
            wrong += 1
        except RACE_ERRORS:  # without the lock: a lost storage commit
            continue
    return wrong


def test_concurrent_wrong_codes_are_all_counted(tmp_path: Path) -> None:
    gate = ReadoutGate(open_store(tmp_path), "dev", lambda: T0)
    gate.enrol_pin(PIN, LockoutPolicy(free_attempts=10_000, base_delay=60, max_delay=60))
    checked = run_together(8, _guesser, tmp_path, False, 25)
    assert checked == [25] * 8
    assert gate.status().failures == 200


def test_unsafe_no_lock_wrong_codes_go_uncounted(tmp_path: Path) -> None:
    for round_ in range(3):
        base = tmp_path / str(round_)
        gate = ReadoutGate(open_store(base), "dev", lambda: T0)
        gate.enrol_pin(PIN, LockoutPolicy(free_attempts=10_000, base_delay=60, max_delay=60))
        run_together(8, _guesser, base, True, 25)
        try:
            if gate.status().failures < 200:
                return
        except TrustError:  # a lost commit left the lockout record behind its counter
            return
    pytest.fail("every failure was counted without the lock: the race never showed")


ROUNDS = 20


def _window_guesser(index: int, barrier: Any, base: Path, unsafe: bool) -> list[str]:
    """One wrong code per round; every round starts after the last wait has passed."""
    now = [T0]
    gate = _gate(base, unsafe, now)
    outcomes = []
    for round_ in range(ROUNDS):
        now[0] = T0 + round_ * 4000  # past the longest wait (3600 s)
        barrier.wait()
        try:
            gate.attempt(WRONG)
        except WrongCode:
            outcomes.append("checked")
        except LockedOut:
            outcomes.append("locked")
        except RACE_ERRORS as error:  # without the lock: a lost storage commit
            outcomes.append(repr(error))
    return outcomes


def _checked_per_round(results: list[list[str]]) -> list[int]:
    return [sum(r[i] == "checked" for r in results) for i in range(ROUNDS)]


def window_setup(base: Path) -> ReadoutGate:
    gate = ReadoutGate(open_store(base), "dev", lambda: T0 + ROUNDS * 4000)
    gate.enrol_pin(PIN, LockoutPolicy(free_attempts=1, base_delay=3600, max_delay=3600))
    return gate


def test_one_lockout_window_checks_one_code(tmp_path: Path) -> None:
    """Eight sessions at once inside one window: one code checked, seven refused unchecked."""
    gate = window_setup(tmp_path)
    results = run_together(8, _window_guesser, tmp_path, False)
    assert _checked_per_round(results) == [1] * ROUNDS
    assert gate.status().failures == ROUNDS


def test_unsafe_no_lock_one_window_checks_several_codes(tmp_path: Path) -> None:
    window_setup(tmp_path)
    per_round = _checked_per_round(run_together(8, _window_guesser, tmp_path, True))
    assert max(per_round) > 1, "never more than one code per window without the lock"


def _totp_user(index: int, barrier: Any, base: Path, unsafe: bool, uri: str) -> list[bool]:
    """Every round, all sessions type the same fresh TOTP code."""
    now = [T0]
    gate = _gate(base, unsafe, now)
    totp = pyotp.parse_uri(uri)
    unlocked = []
    for round_ in range(ROUNDS):
        now[0] = T0 + round_ * 90  # a new time step every round
        code = totp.at(now[0])
        barrier.wait()
        try:
            gate.attempt(code)
            unlocked.append(True)
        except WrongCode:
            unlocked.append(False)
        except RACE_ERRORS:  # without the lock: a lost storage commit
            unlocked.append(False)
    return unlocked


def totp_race(base: Path, unsafe: bool) -> list[int]:
    gate = ReadoutGate(open_store(base), "dev", lambda: T0)
    uri = gate.enrol_totp(LockoutPolicy(free_attempts=10_000, base_delay=60, max_delay=60))
    results = run_together(4, _totp_user, base, unsafe, uri)
    return [sum(r[i] for r in results) for i in range(ROUNDS)]


def test_one_totp_code_unlocks_one_session(tmp_path: Path) -> None:
    assert totp_race(tmp_path, unsafe=False) == [1] * ROUNDS


def test_unsafe_no_lock_one_totp_code_unlocks_several_sessions(tmp_path: Path) -> None:
    assert max(totp_race(tmp_path, unsafe=True)) > 1, "the replay never showed without the lock"


# ---- the keystore: a key name is taken once ---------------------------------------------


def _key_maker(index: int, barrier: Any, base: Path, unsafe: bool) -> str:
    store = open_store(base, unsafe)
    keystore = Keystore(store, store._root, base / "keys")
    barrier.wait()
    try:
        keystore.generate("report", KeyUsage.SIGN_REPORT, now=T0)
    except KeyExists:
        return "refused"
    return "made"


def test_concurrent_key_generation_never_replaces_a_key(tmp_path: Path) -> None:
    for round_ in range(5):
        base = tmp_path / str(round_)
        open_store(base)
        outcomes = run_together(4, _key_maker, base, False)
        assert sorted(outcomes) == ["made", "refused", "refused", "refused"]


def test_unsafe_no_lock_concurrent_key_generation_replaces_keys(tmp_path: Path) -> None:
    for round_ in range(5):
        base = tmp_path / str(round_)
        open_store(base)
        if run_together(4, _key_maker, base, True, errors_ok=True).count("made") > 1:
            return
    pytest.fail("no key was made twice without the lock: the race never showed")


# ---- provisioning: installed once --------------------------------------------------------


def _installer(index: int, barrier: Any, directory: Path, bundle: Any) -> str:
    from tinyward.trust.device import AlreadyProvisioned, Device

    device = Device.open(directory)
    barrier.wait()
    try:
        device.install(bundle)
    except AlreadyProvisioned:
        return "refused"
    return "installed"


def test_concurrent_installs_provision_once(tmp_path: Path) -> None:
    from tinyward.fleet.pki import Fleet
    from tinyward.trust.device import Device

    passphrase = b"correct horse battery staple"
    fleet = Fleet.init(tmp_path / "fleet", passphrase)
    device = Device.init(tmp_path / "device")
    bundle = fleet.enroll(device.enrolment_request, passphrase)
    outcomes = run_together(4, _installer, device.directory, bundle)
    assert sorted(outcomes) == ["installed", "refused", "refused", "refused"]


# ---- the lock itself -------------------------------------------------------------------


def test_threads_of_one_process_are_serialised_too(tmp_path: Path) -> None:
    import threading

    stores = [open_store(tmp_path) for _ in range(4)]  # separate objects, one folder
    versions: list[int] = []

    def write(store: ProtectedStorage) -> None:
        versions.extend(store.write("shared", b"x") for _ in range(50))

    threads = [threading.Thread(target=write, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == list(range(1, 201))


def test_lock_files_are_not_kept_open(tmp_path: Path) -> None:
    """A process may open many device folders: no descriptor outlives its operation."""
    fds = len(os.listdir("/proc/self/fd"))
    for i in range(50):
        store = open_store(tmp_path / str(i))
        store.write("alpha", b"x")
        assert store.read("alpha") == b"x"
    assert len(os.listdir("/proc/self/fd")) == fds


def print_figures() -> None:  # pragma: no cover - `python tests/trust/test_concurrency.py`
    """Each attack once with the lock off and once with it on; print what got through."""
    import tempfile

    for unsafe in (True, False):
        print("lock off (unsafe_no_lock)" if unsafe else "lock on")
        base = Path(tempfile.mkdtemp())
        own, shared, handed_out = race_writers(base, unsafe)
        print(f"  2 processes x {WRITES} writes: own counters {own}, shared counter {shared} "
              f"of {2 * WRITES}, distinct versions {len({v for v in handed_out if v > 0})}")
        base = Path(tempfile.mkdtemp())
        gate = ReadoutGate(open_store(base), "dev", lambda: T0)
        gate.enrol_pin(PIN, LockoutPolicy(free_attempts=10_000, base_delay=60, max_delay=60))
        run_together(8, _guesser, base, unsafe, 25)
        try:
            print(
                f"  8 sessions x 25 wrong codes: {gate.status().failures} failures counted of 200"
            )
        except TrustError as error:
            print(f"  8 sessions x 25 wrong codes: lockout record damaged ({type(error).__name__})")
        base = Path(tempfile.mkdtemp())
        window_setup(base)
        per_window = _checked_per_round(run_together(8, _window_guesser, base, unsafe))
        print(f"  8 sessions, {ROUNDS} lockout windows: codes checked per window {per_window}")
        print(f"  4 sessions, {ROUNDS} TOTP codes: sessions unlocked per code "
              f"{totp_race(Path(tempfile.mkdtemp()), unsafe)}")


if __name__ == "__main__":
    print_figures()
