"""Air-gapped mode: no socket of the device's process tree, enforced by the kernel."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from tests.conftest import require_or_skip
from tinyward.assess.hostile_apps import copy_app
from tinyward.readout import state as display
from tinyward.trust.device import Device

from .conftest import TINYWARD


def test_running_device_holds_no_network_socket(fleet_and_device) -> None:
    _, device = fleet_and_device
    # Events at 5/s: at the default 0.2/s a run may see none before the poll gives up.
    proc = subprocess.Popen([TINYWARD, "device", "run", str(device.directory), "--air-gapped",
                             "--interval", "0.1", "--duration", "20", "--event-rate", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while (time.monotonic() < deadline
               and not display.load(Device.open(device.directory).storage).results):
            time.sleep(0.1)
        assert display.load(Device.open(device.directory).storage).results, (
            "the device produced nothing"
        )
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for member in tree:
            assert member.net_connections(kind="inet") == [], (
                f"{member.pid} holds an internet socket"
            )
        assert Device.open(device.directory).status()["mode"] == "air-gapped"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0, proc.stderr.read().decode()


CORE_TRIES_SOCKETS = textwrap.dedent(
    """
    import socket, subprocess, sys
    from pathlib import Path
    from tinyward.readout.airgapped import run_air_gapped
    from tinyward.trust.device import Device

    outcomes = []

    class HostileSource:
      def take(self, now):
        # A bug or a compromised component of the core's own process tree reaching out.
        for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
            try:
                kind = socket.SOCK_DGRAM if family != socket.AF_NETLINK else socket.SOCK_RAW
                socket.socket(family, kind).close()
                outcomes.append("opened")
            except PermissionError:
                outcomes.append("refused")
        child = subprocess.run([sys.executable, "-c",
                                "import socket; socket.create_connection(('127.0.0.1', 9), 1)"],
                               capture_output=True, text=True)
        outcomes.append("refused" if "PermissionError" in child.stderr else "opened")
        return [{"count": 1}]

    run_air_gapped(Device.open(Path(sys.argv[1])), HostileSource(), interval=0.05, duration=0.2)
    print(" ".join(outcomes[:4]))
    """
)


def test_sockets_from_the_core_process_tree_are_refused(fleet_and_device) -> None:
    _, device = fleet_and_device
    out = subprocess.run([sys.executable, "-c", CORE_TRIES_SOCKETS, str(device.directory)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused"] * 4


ATTEST_UNDER_FILTER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tinyward.trust.airgap import forbid_network
    from tinyward.trust.device import Device
    forbid_network()
    Path(sys.argv[2]).write_bytes(Device.open(Path(sys.argv[1])).attestation_token(bytes.fromhex(sys.argv[3])))
    """
)


def test_attestation_claims_air_gapped_mode_under_the_filter(
    fleet_and_device, tmp_path: Path
) -> None:
    import os

    from tinyward.fleet.attestation import verify_fleet_token

    fleet, device = fleet_and_device
    nonce = os.urandom(32)
    token = tmp_path / "token.cbor"
    subprocess.run([sys.executable, "-c", ATTEST_UNDER_FILTER, str(device.directory), str(token),
                    nonce.hex()], check=True, timeout=60)
    _, claims = verify_fleet_token(fleet, token.read_bytes(), nonce)
    assert claims.operating_mode == "air-gapped"


def test_air_gapped_application_cannot_open_a_socket(fleet_and_device, tmp_path: Path) -> None:
    """The hostile socket app as an air-gapped device's application: refused, counted, no socket."""
    import json
    import os
    import shutil
    import socket
    import tempfile

    _, device = fleet_and_device
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    outer = Path(tempfile.mkdtemp(prefix="tinyward-airgap-app-", dir="/tmp"))
    outer.chmod(0o755)
    app = outer / "socket"
    copy_app("socket", app)
    (app / "target.json").write_text(json.dumps({"port": listener.getsockname()[1]}))
    rows = ["distance_mm"] + ["1000"] * 200
    rows[1 + 2 * 20] = "666"  # the first sample of the third frame triggers the attack
    frames_csv = outer / "frames.csv"
    frames_csv.write_text("\n".join(rows) + "\n")
    for root, _dirs, files in os.walk(outer):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    proc = subprocess.Popen([TINYWARD, "device", "run", str(device.directory), "--air-gapped",
                             "--app", str(app / "sensor.toml"), "--frames", str(frames_csv),
                             "--interval", "0.2", "--duration", "30",
                             # faults are told when their window is over (60 s by default)
                             "--fault-window", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        incidents: dict[str, int] = {}
        while time.monotonic() < deadline and "app_crash" not in incidents:
            incidents = dict(display.load(Device.open(device.directory).storage).incidents)
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            for member in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    assert member.net_connections(kind="inet") == [], f"{member.pid} holds a socket"
            time.sleep(0.2)
        assert incidents.get("app_crash", 0) >= 1, incidents
        if os.geteuid() == 0:
            # The app was started, dropped to its uid and killed with only these kept.
            for tid, sets in _thread_capabilities(proc.pid).items():
                assert sets["CapPrm"] == sets["CapEff"] == sets["CapBnd"] == APP_CAPS, tid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(outer, ignore_errors=True)
    try:
        listener.accept()[0].close()
        raise AssertionError("the application reached the network")
    except TimeoutError:
        pass
    finally:
        listener.close()


#: CAP_KILL, CAP_SETGID and CAP_SETUID: what an air-gapped core running an app keeps.
APP_CAPS = (1 << 5) | (1 << 6) | (1 << 7)


def _thread_capabilities(pid: int) -> dict[str, dict[str, int]]:
    from tinyward.trust.capabilities import thread_sets

    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            with open(f"/proc/{pid}/task/{tid}/status") as handle:
                status = handle.read()
            found[tid] = thread_sets(status)
            found[tid]["NoNewPrivs"] = int(status.split("NoNewPrivs:")[1].split()[0])
    return found


def test_air_gapped_device_without_an_app_keeps_no_capability(fleet_and_device) -> None:
    """Every thread of a root core without an application: no capability in any set
    (so it can write no other process's memory through /proc/PID/mem), no_new_privs."""
    if os.geteuid() != 0:
        require_or_skip("only a root device holds capabilities to drop")
    _, device = fleet_and_device
    proc = _start_air_gapped(device)
    try:
        threads = _thread_capabilities(proc.pid)
        assert threads
        for tid, sets in threads.items():
            assert sets == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0,
                            "NoNewPrivs": 1}, (tid, sets)
    finally:
        _stop(proc)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "air gap: capabilities: all dropped (" in stderr, stderr


def _start_air_gapped(device: Device, **popen: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([TINYWARD, "device", "run", str(device.directory), "--air-gapped",
                             "--interval", "0.1", "--duration", "20", "--event-rate", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]
    deadline = time.monotonic() + 20
    while (time.monotonic() < deadline
           and not display.load(Device.open(device.directory).storage).results):
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=20)


def test_air_gapped_device_closes_inherited_descriptors(fleet_and_device) -> None:
    """Whoever starts the device may hand it an open socket: the filter on socket() would
    not stop a send on it, so the device closes what it inherited first."""
    import os
    import socket

    _, device = fleet_and_device
    with socket.create_server(("127.0.0.1", 0)) as listener:
        donor = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
        with donor, peer:
            inode = os.fstat(donor.fileno()).st_ino
            proc = _start_air_gapped(device, pass_fds=(donor.fileno(),))
            try:
                tree = [
                    psutil.Process(proc.pid),
                    *psutil.Process(proc.pid).children(recursive=True),
                ]
                for member in tree:
                    links = []
                    for fd in os.listdir(f"/proc/{member.pid}/fd"):
                        try:
                            links.append(os.readlink(f"/proc/{member.pid}/fd/{fd}"))
                        except FileNotFoundError:
                            continue
                    assert f"socket:[{inode}]" not in links, f"{member.pid} kept the socket"
            finally:
                _stop(proc)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""


def test_air_gapped_device_runs_in_an_empty_network_namespace(fleet_and_device) -> None:
    import os


    if os.geteuid() != 0:
        require_or_skip("a new network namespace needs root")
    _, device = fleet_and_device
    proc = _start_air_gapped(device)
    try:
        assert os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        with open(f"/proc/{proc.pid}/net/dev") as handle:
            interfaces = [line.split(":")[0].strip() for line in handle.readlines()[2:]]
        assert interfaces == ["lo"]
    finally:
        _stop(proc)
