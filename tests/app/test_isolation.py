"""The application never reads a device secret, whatever the host lacks (issue 12, item 4).

The attacks run the real `tinyward device run --app` with the hostile keystore app, which
leaks the first byte of the file it is pointed at through its results. The device must
refuse to start an application unless a filesystem isolation that covers the device
folder is in force — Landlock, or a separate uid that cannot read it — and prove it by
having the sandboxed process try to open the device's files before any app code runs.

A kernel without Landlock is simulated by a seccomp filter that answers ENOSYS to the
three Landlock syscalls (444-446), installed on the device process, which then runs as
``nobody`` (a device that does not run as root gets no uid drop for its app).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import needs
from tinyward.app import _landlock
from tinyward.app.errors import SandboxError
from tinyward.app.manifest import load_manifest
from tinyward.app.sandbox import DEFAULT_REQUIRED, Sandbox, SandboxConfig, check_before_start
from tinyward.app.supervisor import Supervisor, SupervisorConfig
from tinyward.fleet.pki import Fleet
from tinyward.readout import state as display
from tinyward.trust.device import Device

from .conftest import TRIGGER, frame

pytestmark = pytest.mark.slow
IS_ROOT = os.geteuid() == 0
HAS_LANDLOCK = _landlock.abi_version() > 0
PASSPHRASE = b"correct horse battery staple"
TINYWARD = str(Path(sys.executable).with_name("tinyward"))
NOT_ISOLATION = tuple(r for r in DEFAULT_REQUIRED if r != "filesystem isolation")

#: Run argv[3:] as `nobody`; with argv[1] == "enosys", Landlock first answers ENOSYS.
AS_NOBODY = textwrap.dedent(
    """
    import errno, os, pwd, sys
    import pyseccomp as seccomp
    if sys.argv[1] == "enosys":
        flt = seccomp.SyscallFilter(seccomp.ALLOW)
        for nr in (444, 445, 446):  # landlock_create_ruleset, _add_rule, _restrict_self
            flt.add_rule(seccomp.ERRNO(errno.ENOSYS), nr)
        flt.load()
    pw = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
    os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    os.execv(sys.argv[2], sys.argv[2:])
    """
)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _frames_csv(path: Path) -> Path:
    rows = ["distance_mm"] + ["1000"] * 400
    rows[1 + 2 * 20] = str(TRIGGER)  # the third frame triggers the attack
    path.write_text("\n".join(rows) + "\n")
    path.chmod(0o644)
    return path


def _device(fleet_dir: Path, directory: Path) -> Device:
    fleet = Fleet.init(fleet_dir, PASSPHRASE)
    device = Device.init(directory)
    device.install(fleet.enroll(device.enrolment_request, PASSPHRASE))
    return device


def _run_device_as_nobody(device_dir: Path, manifest: Path, frames: Path,
                          enosys: bool) -> subprocess.CompletedProcess[str]:
    nobody = pwd.getpwnam("nobody")
    _chown_tree(device_dir, nobody.pw_uid, nobody.pw_gid)  # the device runs as nobody
    return subprocess.run(
        [sys.executable, "-c", AS_NOBODY, "enosys" if enosys else "-", TINYWARD, "device", "run",
         str(device_dir), "--air-gapped", "--app", str(manifest), "--frames", str(frames),
         "--interval", "0.2", "--duration", "6"],
        capture_output=True, text=True, timeout=120, check=False)


def _leaked(device_dir: Path, key_byte: int) -> bool:
    os.chown(device_dir, 0, 0)  # read the device's storage back as root
    results = display.load(Device.open(device_dir).storage).results
    return any(r.get("state") == "anomaly" and r.get("count") == key_byte % 1000 for r in results)


@needs(IS_ROOT, "needs root to start the device as nobody")
def test_root_key_leak_without_landlock_as_non_root_is_refused(hostile, world_tmp, tmp_path):
    """No Landlock (ENOSYS) and no root: nothing isolates rot/root.key, so no app may run."""
    device_dir = world_tmp / "device"
    _device(tmp_path / "fleet", device_dir)
    key = device_dir / "rot" / "root.key"
    manifest = hostile("keystore", {"keystore": str(key)})
    out = _run_device_as_nobody(device_dir, manifest, _frames_csv(world_tmp / "f.csv"), enosys=True)
    assert out.returncode != 0, out.stderr
    assert "filesystem isolation" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not _leaked(device_dir, key.read_bytes()[0])


@needs(IS_ROOT and HAS_LANDLOCK, "needs root (to become nobody) and Landlock")
def test_root_key_leak_with_device_folder_inside_app_folder_is_refused(
    hostile, world_tmp, tmp_path
):
    """Landlock is on, but the app folder it allows holds the device folder."""
    manifest = hostile("keystore", {"keystore": "placeholder"})
    device_dir = manifest.parent / "device"
    _device(tmp_path / "fleet", device_dir)
    key = device_dir / "rot" / "root.key"
    (manifest.parent / "target.json").write_text(f'{{"keystore": "{key}"}}')
    out = _run_device_as_nobody(
        device_dir, manifest, _frames_csv(world_tmp / "f.csv"), enosys=False
    )
    assert out.returncode != 0, out.stderr
    assert "beneath" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not _leaked(device_dir, key.read_bytes()[0])


@needs(IS_ROOT and HAS_LANDLOCK, "needs root (to become nobody) and Landlock")
def test_device_run_prints_protections_and_runs_when_isolated(hostile, world_tmp, tmp_path):
    """The control: the same device as nobody with Landlock runs, says so, and leaks nothing."""
    device_dir = world_tmp / "device"
    _device(tmp_path / "fleet", device_dir)
    key = device_dir / "rot" / "root.key"
    manifest = hostile("keystore", {"keystore": str(key)})
    out = _run_device_as_nobody(
        device_dir, manifest, _frames_csv(world_tmp / "f.csv"), enosys=False
    )
    assert out.returncode == 0, out.stderr
    assert "[on ] filesystem isolation" in out.stderr and "by landlock" in out.stderr, out.stderr
    assert not _leaked(device_dir, key.read_bytes()[0])


def _world_readable_key(root: Path) -> Path:
    folder = root / "device"
    folder.mkdir()
    folder.chmod(0o755)
    key = folder / "root.key"
    key.write_bytes(bytes([42]) + os.urandom(31))
    key.chmod(0o644)
    return key


@needs(IS_ROOT, "the uid drop needs the core to run as root")
def test_secret_readable_by_the_sandbox_uid_is_refused(hostile, world_tmp):
    """Landlock off, uid drop on, but the key is world-readable: the child's own try finds it."""
    key = _world_readable_key(world_tmp)
    manifest = hostile("keystore", {"keystore": str(key)})
    config = SandboxConfig(unsafe_no_landlock=True, secret_paths=(key.parent,))
    with pytest.raises(SandboxError, match=r"filesystem isolation \(the app could read"):
        check_before_start(load_manifest(manifest), config)
    with pytest.raises(SandboxError, match="filesystem isolation"):
        Sandbox(load_manifest(manifest), config).start()


def test_no_isolation_at_all_is_refused(hostile, world_tmp):
    """Neither Landlock nor a separate uid: refused even with no secret path named."""
    manifest = hostile("keystore", {"keystore": "/nonexistent"})
    config = SandboxConfig(unsafe_no_landlock=True, unsafe_keep_uid=True)
    with pytest.raises(SandboxError, match="neither Landlock nor a separate uid"):
        check_before_start(load_manifest(manifest), config)


def test_control_without_the_isolation_requirement_the_secret_leaks(hostile, world_tmp, clock):
    """What the requirement prevents: no Landlock, same uid, the key is read and leaked."""
    key = _world_readable_key(world_tmp)
    manifest = hostile("keystore", {"keystore": str(key)})
    config = SandboxConfig(unsafe_no_landlock=True, unsafe_keep_uid=True,
                           secret_paths=(key.parent,), required=NOT_ISOLATION)
    with Supervisor(load_manifest(manifest), config, SupervisorConfig(), clock) as sup:
        assert sup.start(), sup.incidents()
        isolation = {p.name: p for p in sup.protections}["filesystem isolation"]
        assert not isolation.active and str(key.parent) in isolation.reason
        assert sup.process(frame(TRIGGER)).result == {"count": 42, "state": "anomaly"}


@needs(HAS_LANDLOCK, "Landlock is not available in this kernel")
def test_landlock_alone_isolates_a_world_readable_secret(hostile, world_tmp):
    key = _world_readable_key(world_tmp)
    manifest = hostile("keystore", {"keystore": str(key)})
    config = SandboxConfig(unsafe_keep_uid=True, secret_paths=(key.parent,))
    protections = {p.name: p for p in check_before_start(load_manifest(manifest), config)}
    assert protections["filesystem isolation"].active
    assert "2 secret paths tried" in protections["filesystem isolation"].reason


def test_hard_link_of_a_secret_in_the_app_folder_is_refused(hostile, world_tmp):
    """A second name of the key where Landlock allows reading: the try on the device's name
    would pass, so a secret with more than one name is refused outright."""
    key = _world_readable_key(world_tmp)
    key.parent.chmod(0o700)
    key.chmod(0o600)
    manifest = hostile("keystore", {"keystore": "root.key"})
    os.link(key, manifest.parent / "root.key")
    config = SandboxConfig(secret_paths=(key.parent,))
    with pytest.raises(SandboxError, match="hard links"):
        check_before_start(load_manifest(manifest), config)


def test_device_folder_is_passed_whole(tmp_path):
    from tinyward.app.sandbox import secret_probes

    device = Device.init(tmp_path / "device")
    probes = secret_probes((device.directory,))
    assert str(device.directory / "rot" / "root.key") in probes
    assert any(p.startswith(str(device.directory / "storage")) for p in probes)
    shutil.rmtree(device.directory)
