"""Red-team variants of issue 12, item 4: a second *path* to the device folder.

The start check compares resolved paths (symlinks, ``..``) and refuses a secret file with
a second name (hard link). A bind mount is neither: the device folder mounted again
beneath the app folder has one name per mount, resolves to itself, and Landlock, which
allows everything beneath the app folder *as reached*, lets the app read it there. The
child's own try opens the device's canonical path, which Landlock denies, so the check
passed while the app read ``root.key`` through the mount.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs, require_or_skip
from tinyward.app import _landlock
from tinyward.app.errors import SandboxError
from tinyward.app.manifest import load_manifest
from tinyward.app.sandbox import SandboxConfig, check_before_start
from tinyward.app.supervisor import Supervisor, SupervisorConfig

from .conftest import TRIGGER, frame

ROOT_ONLY = [
    pytest.mark.slow,
    needs(os.geteuid() == 0, "bind mounts need root"),
    needs(_landlock.abi_version() > 0, "Landlock is not available"),
]


def _key(root: Path) -> Path:
    folder = root / "device"
    folder.mkdir()
    folder.chmod(0o755)
    key = folder / "root.key"
    key.write_bytes(bytes([42]) + os.urandom(31))
    key.chmod(0o644)
    return key


@pytest.fixture
def bound(hostile, world_tmp):
    """The keystore app with the device folder bind-mounted at ``<app>/mnt``."""
    key = _key(world_tmp)
    manifest = hostile("keystore", {"keystore": "mnt/root.key"})
    mnt = manifest.parent / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(key.parent), str(mnt)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.CalledProcessError) as error:
        require_or_skip(f"cannot bind-mount here: {error}")
    # the app opens a path relative to its own folder: point it at the mount absolutely
    (manifest.parent / "target.json").write_text('{"keystore": "%s"}' % (mnt / "root.key"))
    try:
        yield key, manifest
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=10)


@ROOT_ONLY[0]
@ROOT_ONLY[1]
@ROOT_ONLY[2]
def test_device_folder_bind_mounted_into_the_app_folder_is_refused(bound) -> None:
    key, manifest = bound
    # not root's uid drop: Landlock alone must cover the device folder (a non-root device)
    config = SandboxConfig(unsafe_keep_uid=True, secret_paths=(key.parent,))
    with pytest.raises(SandboxError, match="mount"):
        check_before_start(load_manifest(manifest), config)


@ROOT_ONLY[0]
@ROOT_ONLY[1]
@ROOT_ONLY[2]
def test_control_bind_mount_leaks_the_key_when_the_check_passes(bound, clock) -> None:
    """What the refusal prevents: with the secret not named, the app reads the key."""
    _key_path, manifest = bound
    config = SandboxConfig(unsafe_keep_uid=True)
    with Supervisor(load_manifest(manifest), config, SupervisorConfig(), clock) as sup:
        assert sup.start(), sup.incidents()
        assert sup.process(frame(TRIGGER)).result == {"count": 42, "state": "anomaly"}


MOUNTINFO = """\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 8:2 / /data rw - ext4 /dev/sda2 rw
40 22 8:2 /devices/d1 /srv/app\\040one/mnt rw - ext4 /dev/sda2 rw
41 22 8:2 /devices /opt/all rw - ext4 /dev/sda2 rw
42 22 8:2 /devices/d1/rot /other rw - ext4 /dev/sda2 rw
43 22 8:1 /data /elsewhere rw - ext4 /dev/sda1 rw
"""


@pytest.mark.parametrize("secret, expected", [
    ("/data/devices/d1", {"/srv/app one/mnt", "/opt/all/d1", "/other"}),
    ("/data/devices/d2", {"/opt/all/d2"}),
    ("/data/other", set()),
])
def test_mount_aliases_finds_every_bind_mount_of_a_secret(secret, expected) -> None:
    from tinyward.app.sandbox import mount_aliases

    assert {str(a) for a in mount_aliases(Path(secret), MOUNTINFO)} == expected
