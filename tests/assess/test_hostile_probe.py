"""hostile-app: the hostile application battery against a tinyward device's own sandbox.

The device folder is real (`Device.init`), its root-of-trust key is what the keystore app
reads. Controls: the same battery against the sandbox with its isolation switched off
(the `unsafe_` switches of tests/app/test_hostile.py) fails, naming what got out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs
from tinyward.app import _landlock
from tinyward.app.sandbox import DEFAULT_REQUIRED, SandboxConfig
from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.probes.hostile import BATTERY, AppRun, HostileApp, verdict
from tinyward.assess.target import make_target
from tinyward.trust.device import Device

pytestmark = pytest.mark.slow
IS_ROOT = os.geteuid() == 0
HAS_LANDLOCK = _landlock.abi_version() > 0


@pytest.fixture
def device_dir() -> Iterator[Path]:
    # Under /tmp, traversable (as tests/app's world_tmp): the uid drop alone must not be
    # what hides the key, or switching Landlock off would show nothing.
    root = Path(tempfile.mkdtemp(prefix="tinyward-assess-dev-", dir="/tmp"))
    root.chmod(0o755)
    Device.init(root / "device")
    yield root / "device"
    shutil.rmtree(root, ignore_errors=True)


def verdicts(evidence: list) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {e.requirement: (e.verdict, e.text) for e in evidence}


def test_hostile_verdicts() -> None:
    context = Context(load_model())
    contained = [AppRun(h, True, True, None, h.incident, "", True) for h in BATTERY]
    assert {v for v, _ in verdicts(verdict(contained, context)).values()} == {"pass"}
    leaked = [*contained[:1], AppRun(BATTERY[1], True, True, {"count": 1}, None, "", True)]
    got = verdicts(verdict(leaked, context))
    assert got["I-APP-1"][0] == "fail" and got["I-INPUT-1"][0] == "not-tested"
    unreported = [AppRun(h, True, True, None, None, "", True) for h in BATTERY]
    assert {v for v, _ in verdicts(verdict(unreported, context)).values()} == {"fail"}
    refused = [AppRun(h, False, note="sandbox refused") for h in BATTERY]
    assert {v for v, _ in verdicts(verdict(refused, context)).values()} == {"not-tested"}
    assert {v for v, _ in verdicts(verdict([], context)).values()} == {"not-tested"}


@needs(HAS_LANDLOCK, "Landlock is not available in this kernel")
def test_a_tinyward_device_sandbox_contains_the_whole_battery(device_dir: Path) -> None:
    target = make_target(device_dir=device_dir)
    got = verdicts(HostileApp().run(target, Context(load_model()), Budget(300, 50)))
    assert got["I-APP-1"][0] == "pass", got
    assert got["I-INPUT-1"][0] == "pass", got
    assert "keystore: crash" in got["I-APP-1"][1] and "hang: hang" in got["I-INPUT-1"][1]


@needs(IS_ROOT, "the control keeps root's uid in the sandbox")
def test_control_without_isolation_the_device_key_leaks_and_fails(device_dir: Path) -> None:
    for path in (device_dir, device_dir / "rot"):  # a weak device: its key readable by all
        path.chmod(0o755)
    (device_dir / "rot" / "root.key").chmod(0o644)
    unsafe = HostileApp(lambda d: SandboxConfig(
        secret_paths=(d,), unsafe_no_landlock=True, unsafe_keep_uid=True,
        required=tuple(r for r in DEFAULT_REQUIRED if r != "filesystem isolation")))
    got = verdicts(unsafe.run(make_target(device_dir=device_dir), Context(load_model()),
                              Budget(300, 50)))
    assert got["I-APP-1"][0] == "fail" and "keystore" in got["I-APP-1"][1], got
    assert "gave a result" in got["I-APP-1"][1]


def test_control_without_seccomp_and_landlock_the_socket_gets_out(device_dir: Path) -> None:
    unsafe = HostileApp(lambda d: SandboxConfig(
        secret_paths=(d,), unsafe_no_seccomp=True, unsafe_no_landlock=True,
        required=tuple(r for r in DEFAULT_REQUIRED if r not in ("seccomp", "landlock",
                                                               "filesystem isolation"))))
    got = verdicts(unsafe.run(make_target(device_dir=device_dir), Context(load_model()),
                              Budget(300, 50)))
    assert got["I-APP-1"][0] == "fail", got
    assert "connected to the listener" in got["I-APP-1"][1]


def test_a_folder_that_is_not_a_tinyward_device_is_not_tested(tmp_path: Path) -> None:
    got = verdicts(HostileApp().run(make_target(device_dir=tmp_path), Context(load_model()),
                                    Budget(10, 5)))
    assert {v for v, _ in got.values()} == {"not-tested"}
