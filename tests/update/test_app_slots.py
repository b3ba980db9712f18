"""Where app slots live and whether an app can change its own slot (real sandbox).

The sandbox treats the device folder as secret, so app slots live beside it
(``<device dir>.slots``, 0755, owned by the core); the app runs from its slot read-only
(Landlock allows reads only, and it runs as the sandbox's user, who owns nothing
there), and the agent measures the slot again after the trial."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyward.app.sandbox import DEFAULT_REQUIRED, SandboxConfig
from tinyward.trust.device import Device
from tinyward.update.agent import UpdateAgent
from tinyward.update.health import HealthCheck, TrialConfig
from tinyward.update.slots import default_slots_dir

from .helpers import PRODUCT, version
from .test_trial_apps import DEADLINE_S, FrameClock, _install

pytestmark = pytest.mark.slow


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A folder the sandbox's user may traverse (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="tinyward-upd-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _health(sandbox: SandboxConfig | None = None) -> HealthCheck:
    return HealthCheck(TrialConfig(deadline_s=DEADLINE_S, results_needed=2),
                       clock=FrameClock(), sandbox_config=sandbox)


def test_default_app_slots_beside_the_device_folder_pass_a_trial(world_tmp: Path,
                                                                  tmp_path: Path) -> None:
    device = Device.init(world_tmp / "dev")
    agent = UpdateAgent.for_device(device, product_class=PRODUCT, health=_health())
    assert agent.slots.root == world_tmp / "dev.slots" == default_slots_dir(device.directory)
    assert (world_tmp / "dev.slots").stat().st_mode & 0o777 == 0o755
    assert _install(agent, tmp_path, "good", "1.0.0").state == "accepted"
    assert agent.active_content("app").is_relative_to(world_tmp / "dev.slots")


def test_app_cannot_modify_its_own_slot_during_its_trial(world_tmp: Path,
                                                         tmp_path: Path) -> None:
    device = Device.init(world_tmp / "dev")
    agent = UpdateAgent.for_device(device, product_class=PRODUCT, health=_health())
    outcome = _install(agent, tmp_path, "self_modifier", "1.0.0")
    assert (outcome.state, outcome.why) == ("accepted", None)  # every write failed
    folder = agent.active_content("app")
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.json", "self_modifier_app.py", "sensor.toml"]
    assert folder.stat().st_mode & 0o777 == 0o755
    agent.check_running()  # the slot still measures as installed
    assert agent.counter("app") == version("1.0.0").as_counter()


def test_unsafe_sandbox_lets_the_app_change_its_slot_and_the_remeasure_reverts_it(
        world_tmp: Path, tmp_path: Path) -> None:
    # Control: with Landlock off and the core's uid kept, the same app does change its
    # slot after the measurement; the agent's second measurement after the trial refuses
    # it (before that check it was accepted and the counter raised).
    device = Device.init(world_tmp / "dev")
    unsafe = SandboxConfig(unsafe_no_landlock=True, unsafe_keep_uid=True,
                           secret_paths=(device.directory,),
                           required=tuple(r for r in DEFAULT_REQUIRED
                                          if r != "filesystem isolation"))
    agent = UpdateAgent.for_device(device, product_class=PRODUCT, health=_health(unsafe))
    outcome = _install(agent, tmp_path, "self_modifier", "1.0.0")
    assert (outcome.state, outcome.why) == ("reverted", "slot-corrupt")
    assert agent.installed("app") is None and agent.counter("app") == 0
