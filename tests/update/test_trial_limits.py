"""What a trial can and cannot prove (real sandbox): an app that recognises the trial's
frames. With the default frames (zeros) it passes, the documented limit; fed frames like
the sensor's (``HealthCheck(frames=...)``, what a runner should pass), it is caught."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tinyward.trust.device import Device
from tinyward.update.agent import UpdateAgent
from tinyward.update.health import HealthCheck, TrialConfig

from .helpers import PRODUCT
from .test_app_slots import world_tmp  # noqa: F401 - fixture
from .test_trial_apps import DEADLINE_S, FrameClock, _install

pytestmark = pytest.mark.slow


def _sensor_like(manifest: object) -> Iterator[np.ndarray]:
    spec = manifest.input  # type: ignore[attr-defined]
    rng = np.random.default_rng(7)
    while True:  # a distance sensor: about 800 mm, a little noise
        yield (800 + rng.normal(0, 5, spec.frame_shape)).astype(spec.dtype)


def _agent(world: Path, **health: object) -> UpdateAgent:
    device = Device.init(world / "dev")
    check = HealthCheck(TrialConfig(deadline_s=DEADLINE_S, results_needed=3),
                        clock=FrameClock(), **health)  # type: ignore[arg-type]
    return UpdateAgent.for_device(device, product_class=PRODUCT, health=check)


def test_limit_app_that_recognises_the_default_zero_frames_passes_its_trial(
        world_tmp: Path, tmp_path: Path) -> None:  # noqa: F811
    # The documented limit (docs/updates.md, "What a trial cannot prove").
    assert _install(_agent(world_tmp), tmp_path, "trial_dodger", "1.0.0").state == "accepted"


def test_app_that_recognises_the_trial_is_caught_with_sensor_like_frames(
        world_tmp: Path, tmp_path: Path) -> None:  # noqa: F811
    outcome = _install(_agent(world_tmp, frames=_sensor_like), tmp_path, "trial_dodger",
                       "1.0.0")
    assert (outcome.state, outcome.why) == ("reverted", "contract")
