"""The one copy of the hostile apps: every app the probe and the tests name is shipped, and
a copy is the packaged code, runnable by the sandbox's uid."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tinyward.assess import hostile_apps
from tinyward.assess.probes.hostile import BATTERY
from tinyward.errors import Misuse

#: Every app a test names (tests/app, tests/link, tests/readout) or the probe runs.
USED = {"big_result", "covert", "cpu_hog", "crash", "exec_shell", "flood", "forged_results",
        "hang", "keystore", "kill_core", "latency_bits", "memory_hog", "numpy_scalar",
        "raw_cbor", "raw_frames", "socket", "stall", "exfil"}


def test_every_app_used_is_shipped_once() -> None:
    assert set(hostile_apps.names()) >= USED
    assert {hostile.app for hostile in BATTERY} <= USED


def test_a_copy_is_the_packaged_app_readable_by_everyone(tmp_path: Path) -> None:
    folder = hostile_apps.copy_app("socket", tmp_path / "socket")
    packaged = hostile_apps.source("socket")
    assert (folder / "app.py").read_text() == (packaged / "app.py.txt").read_text()
    assert "TRIGGER" in (folder / "app.py").read_text()
    assert (folder / "sensor.toml").read_text() == (packaged / "sensor.toml").read_text()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()} == {0o644}


def test_an_unknown_or_path_like_name_is_refused(tmp_path: Path) -> None:
    for name in ("nope", "../hostile", "socket/../keystore", ""):
        with pytest.raises(Misuse, match="no hostile app"):
            hostile_apps.copy_app(name, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_copying_onto_an_existing_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "socket").mkdir()
    with pytest.raises(FileExistsError):
        hostile_apps.copy_app("socket", tmp_path / "socket")
