"""The readout driven as a person would: in a real terminal (tmux), keys typed, screen read."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tinyward.fleet.pki import Fleet
from tinyward.readout import state as display
from tinyward.trust.device import Device
from tinyward.trust.lockout import LockoutPolicy
from tinyward.trust.readout import ReadoutGate

from .conftest import PASSPHRASE, TINYWARD, readout_pids

PIN = "48291730"


def seed(device: Device, count: int) -> None:
    display.save(
        device.storage,
        display.DisplayState(
            updated_at=int(time.time()), results=({"count": count},), mode="air-gapped"
        ),
    )


def test_nothing_shown_before_authentication(
    fleet_and_device, tmux_factory, tmp_path: Path
) -> None:
    _, device = fleet_and_device
    ReadoutGate(device.storage, "d").enrol_pin(PIN)
    seed(device, 777)
    term = tmux_factory([TINYWARD, "device", "readout", str(device.directory)], tmp_path)
    locked = term.wait_for("code>")
    assert "LOCKED" in locked
    assert "777" not in locked and "RESULT" not in locked
    term.send("00000000")
    screen = term.wait_for("wrong code")
    assert "777" not in screen and "RESULT" not in screen
    term.send(PIN)
    unlocked = term.wait_for("RESULT count")
    assert "777" in unlocked.split("unlocked", 1)[1]


def test_brute_force_is_bounded_across_kill_and_restart(
    fleet_and_device, tmux_factory, tmp_path: Path
) -> None:
    """Type wrong codes as fast as a script can for a bounded time, kill -9 the readout in the
    middle and start it again: the codes actually checked never exceed what the policy allows
    in that time, and the right code still works once the wait is over."""
    _, device = fleet_and_device
    policy = LockoutPolicy(free_attempts=3, base_delay=1.0, max_delay=4.0)
    ReadoutGate(device.storage, "d").enrol_pin(PIN, policy)
    seed(device, 31)
    command = [TINYWARD, "device", "readout", str(device.directory)]
    term = tmux_factory(command, tmp_path)
    term.wait_for("code>")
    started = time.monotonic()
    typed = 0
    for phase in range(2):
        phase_end = time.monotonic() + 5.0
        while time.monotonic() < phase_end and typed < 400:
            term.send(f"{typed % 100000000:08d}" if f"{typed:08d}" != PIN else "99999999")
            typed += 1
            time.sleep(0.02)
        if phase == 0:
            pids = readout_pids(device.directory)
            assert pids, "the readout process was not found to kill"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
            term.kill()
            term = tmux_factory(command, tmp_path)
            term.wait_for("code>")
    elapsed = time.monotonic() - started
    checked = ReadoutGate(device.storage, "d").status().failures
    allowed = policy.max_attempts_within(elapsed)
    assert typed > 3 * allowed, "the script did not really try to brute-force"
    assert 3 <= checked <= allowed, (
        f"{checked} codes checked in {elapsed:.1f} s; policy allows {allowed}"
    )
    # The owner gets in once the wait is over.
    time.sleep(policy.max_delay + 0.5)
    marker = term.screen().count("RESULT count")
    term.send(PIN)
    term.wait_for("RESULT count", after=marker)


def test_qr_report_verifies_and_forgeries_are_refused(
    fleet_and_device, tmux_factory, tmp_path: Path
) -> None:
    fleet, device = fleet_and_device
    ReadoutGate(device.storage, "d").enrol_pin(PIN)
    seed(device, 12)
    term = tmux_factory([TINYWARD, "device", "readout", str(device.directory)], tmp_path)
    term.wait_for("code>")
    term.send(PIN)
    term.wait_for("RESULT count")
    term.send("q")
    term.wait_for("saved as")
    exported = sorted((device.directory / "readout-reports").glob("*.txt"))
    assert len(exported) == 1
    text = exported[0].read_text().strip()
    assert text.startswith("TW1:") and text[:40] in term.screen().replace("\n", "")

    def verify(arg: str, fleet_dir: Path = fleet.directory) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TINYWARD, "report", "verify", arg, "--fleet", str(fleet_dir)],
                              capture_output=True, text=True, timeout=60, check=False)

    middle = len(text) // 2
    altered = text[:middle] + ("A" if text[middle] != "A" else "B") + text[middle + 1:]
    bad = verify(altered)
    assert bad.returncode != 0 and "report refused" in bad.stderr

    other = Fleet.init(tmp_path / "other-fleet", PASSPHRASE)
    foreign = verify(text, other.directory)
    assert foreign.returncode != 0 and "not enrolled in fleet" in foreign.stderr

    good = verify(str(exported[0]))
    assert good.returncode == 0, good.stderr
    assert '"count": 12' in good.stdout

    replay = verify(text)
    assert replay.returncode != 0 and "replay" in replay.stderr
