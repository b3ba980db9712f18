"""Hostile applications, each run in the real sandbox (one named test per attack).

Every hostile app behaves on ordinary frames and attacks on a frame whose first sample is
666. Each test checks: the attack is contained (nothing got out), the incident is counted
by kind, the device reported itself unhealthy meanwhile, and after the backoff the app is
restarted and ordinary frames are processed again.

Where a layer is what stops an attack, a control test switches that layer off
(``unsafe_*``) and shows the attack then succeeds — so each test names what protects.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from tests.conftest import needs
from tinyward.app import _landlock
from tinyward.app.manifest import load_manifest
from tinyward.app.sandbox import DEFAULT_REQUIRED, SandboxConfig
from tinyward.app.supervisor import State, Supervisor, SupervisorConfig

from .conftest import TRIGGER, FakeClock, frame

pytestmark = pytest.mark.slow
IS_ROOT = os.geteuid() == 0
HAS_LANDLOCK = _landlock.abi_version() > 0
NOT_ISOLATION = tuple(r for r in DEFAULT_REQUIRED if r != "filesystem isolation")


def supervise(manifest: Path, clock: FakeClock, **sandbox: object) -> Supervisor:
    config = SandboxConfig(frame_deadline_s=float(sandbox.pop("deadline", 5.0)), **sandbox)
    sup = Supervisor(
        load_manifest(manifest),
        config,
        SupervisorConfig(backoff_initial_s=1.0, fault_window_s=0.0),
        clock,
    )
    assert sup.start(), sup.incidents()
    return sup


def attack_then_recover(sup: Supervisor, clock: FakeClock, kind: str) -> None:
    """The shared second half of every test: incident, unhealthy, restart, frames again."""
    assert sup.process(frame()).result is not None
    outcome = sup.process(frame(TRIGGER))
    assert outcome.result is None
    assert outcome.incident == kind, outcome
    assert sup.incidents() == {kind: 1}
    assert sup.state is State.RESTARTING and not sup.healthy
    # Before the backoff elapsed, frames are not given to the app.
    assert not sup.process(frame()).processed
    clock.advance(1.0)
    after = sup.process(frame())
    assert after.result is not None and after.result["state"] == "normal"
    assert sup.healthy and sup.incidents() == {kind: 1}


def test_socket_refused_by_seccomp(hostile, clock):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        manifest = hostile("socket", {"port": listener.getsockname()[1]})
        with supervise(manifest, clock) as sup:
            attack_then_recover(sup, clock, "crash")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected


@needs(HAS_LANDLOCK and _landlock.abi_version() >= 4, "needs Landlock ABI 4")
def test_socket_refused_by_landlock_without_seccomp(hostile, clock):
    # Second layer: with seccomp off, Landlock still denies the TCP connect.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        manifest = hostile("socket", {"port": listener.getsockname()[1]})
        with supervise(manifest, clock, unsafe_no_seccomp=True, required=()) as sup:
            attack_then_recover(sup, clock, "crash")
        with pytest.raises(BlockingIOError):
            listener.accept()


def _keystore(root: Path, world_readable: bool) -> Path:
    """A fake device folder with keystore/device.key (first byte 42)."""
    keystore = root / "device" / "keystore"
    keystore.mkdir(parents=True)
    key = keystore / "device.key"
    key.write_bytes(bytes([42]) + os.urandom(31))
    mode_dir, mode_file = (0o755, 0o644) if world_readable else (0o700, 0o600)
    for path in (root / "device", keystore):
        path.chmod(mode_dir)
    key.chmod(mode_file)
    return key


@needs(HAS_LANDLOCK, "Landlock is not available in this kernel")
def test_keystore_read_refused_by_landlock(hostile, clock, world_tmp):
    # The key is world-readable here, so the uid drop cannot be what stops the read.
    key = _keystore(world_tmp, world_readable=True)
    manifest = hostile("keystore", {"keystore": str(key)})
    with supervise(manifest, clock) as sup:
        assert {p.name: p.active for p in sup.protections}["landlock"]
        attack_then_recover(sup, clock, "crash")


@needs(HAS_LANDLOCK, "Landlock is not available in this kernel")
def test_keystore_control_without_landlock_the_world_readable_key_leaks(hostile, clock, world_tmp):
    key = _keystore(world_tmp, world_readable=True)
    manifest = hostile("keystore", {"keystore": str(key)})
    with supervise(manifest, clock, unsafe_no_landlock=True) as sup:
        assert sup.process(frame(TRIGGER)).result == {"count": 42, "state": "anomaly"}


@needs(IS_ROOT, "the uid drop needs the core to run as root")
def test_keystore_read_refused_by_uid_drop(hostile, clock, world_tmp):
    # Landlock off: only the separate uid (nobody) protects the root-only key file.
    key = _keystore(world_tmp, world_readable=False)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    manifest = hostile("keystore", {"keystore": str(key)})
    with supervise(manifest, clock, unsafe_no_landlock=True) as sup:
        assert {p.name: p.active for p in sup.protections}["separate uid"]
        attack_then_recover(sup, clock, "crash")


@needs(IS_ROOT, "the uid drop needs the core to run as root")
def test_keystore_control_as_root_without_landlock_the_key_leaks(hostile, clock, world_tmp):
    key = _keystore(world_tmp, world_readable=False)
    manifest = hostile("keystore", {"keystore": str(key)})
    # Without any filesystem isolation the sandbox now refuses to start (test_isolation.py);
    # the requirement is lifted here to show what it prevents.
    with supervise(manifest, clock, unsafe_no_landlock=True, unsafe_keep_uid=True,
                   required=NOT_ISOLATION) as sup:
        assert sup.process(frame(TRIGGER)).result == {"count": 42, "state": "anomaly"}


def test_exec_shell_refused(hostile, clock, world_tmp):
    marker_dir = world_tmp / "markers"
    marker_dir.mkdir(mode=0o777)
    marker_dir.chmod(0o777)
    marker = marker_dir / "pwned"
    manifest = hostile("exec_shell", {"marker": str(marker)})
    with supervise(manifest, clock) as sup:
        attack_then_recover(sup, clock, "crash")
    assert not marker.exists()


def test_raw_frames_written_into_the_output_pipe_are_refused(hostile, clock):
    manifest = hostile("raw_frames", {})
    with supervise(manifest, clock) as sup:
        # The frame's bytes (0x029a repeated) read as a 4-byte length are far over the limit.
        attack_then_recover(sup, clock, "oversize")


def test_one_megabyte_result_is_refused(hostile, clock):
    manifest = hostile("big_result", {})
    with supervise(manifest, clock) as sup:
        attack_then_recover(sup, clock, "oversize")


def test_a_thousand_results_a_second_are_cut_at_the_declared_rate(hostile, clock):
    manifest = hostile("flood", {})
    with supervise(manifest, clock) as sup:
        accepted = 0
        for _ in range(1000):  # one frame per millisecond of the fake clock
            clock.advance(0.001)
            outcome = sup.process(frame())
            if outcome.result is not None:
                accepted += 1
            if outcome.incident:
                break
        assert accepted == 60  # max_results_per_minute
        assert outcome.incident == "too_frequent"
        assert sup.incidents() == {"too_frequent": 1} and not sup.healthy
        clock.advance(60.0)  # the window has passed: restarted, results accepted again
        assert sup.process(frame()).result is not None and sup.healthy


def test_hanging_app_is_killed_at_the_deadline(hostile, clock):
    manifest = hostile("hang", {})
    with supervise(manifest, clock, deadline=0.5) as sup:
        pid = sup.pid
        attack_then_recover(sup, clock, "hang")
        assert sup.pid != pid
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the old child is gone (and reaped)


def test_crashing_app_is_restarted(hostile, clock):
    manifest = hostile("crash", {})
    with supervise(manifest, clock) as sup:
        attack_then_recover(sup, clock, "crash")


def test_memory_hog_is_stopped_by_the_address_space_limit(hostile, clock):
    manifest = hostile("memory_hog", {})
    with supervise(manifest, clock) as sup:
        attack_then_recover(sup, clock, "crash")  # MemoryError: RLIMIT_AS is 1 GiB


def test_forged_result_messages_in_the_pipe_are_refused(hostile, clock):
    # 1,000 well-formed, in-contract results written straight into the pipe: none counts.
    manifest = hostile("forged_results", {})
    with supervise(manifest, clock) as sup:
        attack_then_recover(sup, clock, "unsolicited")


def test_app_cannot_kill_the_core(hostile, clock):
    # seccomp allows kill() only of itself; Landlock scopes signals; the uid differs.
    manifest = hostile("kill_core", {})
    with supervise(manifest, clock) as sup:
        attack_then_recover(sup, clock, "crash")
    # We are the parent it tried to kill, and we are still here to assert it.


def test_numpy_scalar_result_is_a_wrong_type(hostile, clock):
    manifest = hostile("numpy_scalar", {})
    with supervise(manifest, clock) as sup:
        attack_then_recover(sup, clock, "wrong_type")


def test_cpu_time_limit_stops_a_spinning_app(hostile, clock):
    # RLIMIT_CPU = 1 s; the deadline is far longer, so it is the CPU limit that fires.
    manifest = hostile("hang", {})
    with supervise(manifest, clock, deadline=30.0, cpu_seconds=1) as sup:
        outcome = sup.process(frame(TRIGGER))
        assert outcome.incident == "cpu_limit", outcome
        assert sup.incidents() == {"cpu_limit": 1}


# ---- issue 12, item 2: a CPU budget per wall-clock second, set by the core ----------------

def _hog(hostile, clock: FakeClock, share: float | None) -> Supervisor:
    config = SandboxConfig(frame_deadline_s=5.0)
    sup = Supervisor(load_manifest(hostile("cpu_hog", {})), config,
                     SupervisorConfig(fault_window_s=0.0, cpu_share=share, cpu_burst_s=0.5),
                     clock)
    assert sup.start(), sup.incidents()
    return sup


def test_cpu_hog_is_stopped_by_the_cpu_budget(hostile, clock):
    with _hog(hostile, clock, share=0.1) as sup:
        outcomes = []
        for _ in range(12):  # 0.3 CPU-s a frame against 0.1 a second and a 0.5 s burst
            outcomes.append(sup.process(frame()))
            if outcomes[-1].incident:
                break
        assert outcomes[-1].incident == "over_budget", outcomes
        assert sup.incidents() == {"over_budget": 1} and not sup.healthy


def test_cpu_hog_control_without_a_budget_runs_on(hostile, clock):
    with _hog(hostile, clock, share=None) as sup:
        assert all(sup.process(frame()).result is not None for _ in range(6))
        assert sup.incidents() == {}
