"""Fixtures for the sandbox tests: app folders the sandbox user can read, a fake clock."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tinyward.assess.hostile_apps import copy_app

TRIGGER = 666


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temp folder under /tmp that the sandbox's uid (nobody) may traverse.

    pytest's tmp_path lives in a 0700 root folder, which the uid drop alone would make
    unreadable — that would hide whether Landlock works.
    """
    path = Path(tempfile.mkdtemp(prefix="tinyward-app-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hostile(world_tmp: Path) -> Callable[[str, dict[str, object]], Path]:
    """Copy a hostile app into ``world_tmp`` with its ``target.json``; return the manifest."""

    def make(name: str, target: dict[str, object]) -> Path:
        folder = world_tmp / name
        copy_app(name, folder)
        (folder / "target.json").write_text(json.dumps(target))
        for root, _dirs, files in os.walk(folder):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        return folder / "sensor.toml"

    return make


def frame(value: int = 100) -> np.ndarray:
    return np.full((20, 1), value, dtype=np.int16)
