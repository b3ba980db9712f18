"""Red-team variants of issue 12, item 10: one running instance per device folder.

Held: the folder reached through a symlink, ``..`` or a bind mount is the same folder
(``flock`` is on the file, whatever path opened it). Broke: the lock was on
``instance.lock`` alone, so deleting (or renaming) that file while a device runs let a
second ``device run`` create a fresh one and lock it: two instances, interleaving
sequence numbers. The instance now also locks the folder itself, which a file operation
inside it cannot replace.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyward.trust.instance import LOCK_NAME, InstanceLock, running_instance

SECOND = (
    "import sys\nfrom pathlib import Path\n"
    "from tinyward.trust.instance import InstanceLock, DeviceBusy\n"
    "try:\n    InstanceLock(Path(sys.argv[1])).__enter__()\n    print('second instance ran')\n"
    "except DeviceBusy:\n    print('busy')\n"
)


def _second(path: Path) -> str:
    out = subprocess.run([sys.executable, "-c", SECOND, str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_folder_through_a_symlink_or_dotdot_is_one_instance(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.mkdir()
    (tmp_path / "link").symlink_to(device)
    with InstanceLock(device):
        assert _second(tmp_path / "link") == "busy"
        assert _second(device / ".." / "link") == "busy"


@pytest.mark.parametrize("how", ["unlink", "rename"])
def test_lock_file_removed_while_running_still_one_instance(tmp_path: Path, how: str) -> None:
    device = tmp_path / "device"
    device.mkdir()
    with InstanceLock(device, "air-gapped"):
        lock = device / LOCK_NAME
        if how == "unlink":
            lock.unlink()
        else:
            lock.rename(device / "old.lock")
        assert _second(device) == "busy"
        assert running_instance(device) is not None


def test_a_lock_file_replaced_by_a_symlink_does_not_open_its_target(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    (device / LOCK_NAME).symlink_to(target)
    try:
        with InstanceLock(device):
            pass
    except OSError:
        pass  # refusing is fine too
    assert target.read_text() == "keep me"
    os.chmod(tmp_path, 0o700)
