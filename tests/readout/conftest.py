"""Fixtures for the readout: a provisioned device and a terminal driven through tmux."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyward.fleet.pki import Fleet
from tinyward.trust.device import Device

PASSPHRASE = b"correct horse battery staple"
TINYWARD = str(Path(sys.executable).with_name("tinyward"))


@pytest.fixture
def fleet_and_device(tmp_path: Path) -> tuple[Fleet, Device]:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    device = Device.init(tmp_path / "device")
    device.install(fleet.enroll(device.enrolment_request, PASSPHRASE))
    return fleet, device


class Tmux:
    """One tmux session running one command: type into it and read its screen."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed: run scripts/install-system-deps.sh")
        self.name = f"tw-{uuid.uuid4().hex[:8]}"
        # A tmux server of its own per session: no race with another test's server exiting.
        self.tmux = ["tmux", "-L", self.name]
        self.cwd = cwd
        self.start(command)

    def start(self, command: list[str]) -> None:
        shell = " ".join(f"'{c}'" for c in command) + "; sleep 600"
        subprocess.run([*self.tmux, "new-session", "-d", "-s", self.name, "-x", "140", "-y", "50",
                        "-c", str(self.cwd), shell], check=True)

    def pane_pid(self) -> int:
        out = subprocess.run([*self.tmux, "list-panes", "-t", self.name, "-F", "#{pane_pid}"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])

    def send(self, text: str, enter: bool = True) -> None:
        args = [*self.tmux, "send-keys", "-t", self.name, "-l", text]
        subprocess.run(args, check=True)
        if enter:
            subprocess.run([*self.tmux, "send-keys", "-t", self.name, "Enter"], check=True)

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-t", self.name, "-p", "-S", "-3000"],
                              capture_output=True, text=True, check=True).stdout

    def wait_for(self, needle: str, timeout: float = 20.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen.count(needle) > after:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} did not appear on screen:\n{self.screen()[-3000:]}")

    def kill(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def tmux_factory() -> Iterator[object]:
    sessions: list[Tmux] = []

    def make(command: list[str], cwd: Path) -> Tmux:
        session = Tmux(command, cwd)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.kill()


def readout_pids(device_dir: Path) -> list[int]:
    """PIDs of readout processes for this device (to kill -9 them)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "readout" in cmdline and str(device_dir) in cmdline:
            found.append(proc.pid)
    return found


os.environ.setdefault("COLUMNS", "140")
