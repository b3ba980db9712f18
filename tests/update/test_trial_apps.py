"""Application updates tried in the real sandbox under the real supervisor: a good one is
accepted and attested, one that crashes on start and one that breaks its contract are
reverted automatically within the trial's deadline, reported, and the counter stays."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyward.trust.attestation import TokenConfig, verify_token
from tinyward.trust.device import Device
from tinyward.trust.psa_claims import LIFECYCLE_PSA_ROT_PROVISIONING
from tinyward.update.agent import UpdateAgent
from tinyward.update.health import HealthCheck, TrialConfig

from .helpers import APPS, PRODUCT, app_tar, app_version, meta, tuf_info, version

pytestmark = pytest.mark.slow
#: the trial's deadline, in seconds of the clock below
DEADLINE_S = 20.0


class FrameClock:
    """Trial time that advances one frame period per reading: the deadline is then a count
    of steps, the same on a loaded machine as on an idle one (no timed assertions)."""

    def __init__(self, step: float = 0.5) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """Slots under /tmp, traversable by the sandbox's user (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="tinyward-upd-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(tmp_path: Path, world_tmp: Path) -> UpdateAgent:
    device = Device.init(tmp_path / "dev")
    health = HealthCheck(TrialConfig(deadline_s=DEADLINE_S, results_needed=2),
                         clock=FrameClock())
    # the device's own sandbox: its folder is a secret path the app must not read
    return UpdateAgent.for_device(device, product_class=PRODUCT, health=health,
                                  slots_dir=world_tmp / "slots")


def _install(agent: UpdateAgent, tmp: Path, app: str, ver: str):
    folder = app_version(APPS / app, tmp / f"{app}-{ver}", ver)
    archive = app_tar(folder, tmp / f"{app}-{ver}.tar")
    length, hashes = tuf_info(archive)
    return agent.apply("app", archive, meta("app", ver), length, hashes)


def _running_app(agent: UpdateAgent) -> str:
    return (agent.active_content("app") / "sensor.toml").read_text()


@pytest.mark.parametrize("bad,why", [("crash_on_start", "crashed"), ("violator", "contract")])
def test_app_update_that_fails_its_trial_is_reverted_reported_counter_kept(
        agent: UpdateAgent, tmp_path: Path, bad: str, why: str) -> None:
    assert _install(agent, tmp_path, "good", "1.0.0").state == "accepted"
    counter = agent.counter("app")
    assert counter == version("1.0.0").as_counter()
    outcome = _install(agent, tmp_path, bad, "1.1.0")
    assert (outcome.state, outcome.why) == ("reverted", why)
    assert agent.status() == {"state": "reverted", "ver": {"app": "1.0.0"}, "why": why}
    assert agent.counter("app") == counter
    assert 'name = "good_counter"' in _running_app(agent)
    assert outcome.trial_s <= DEADLINE_S  # decided (and reverted) within the deadline


def test_app_update_that_never_answers_is_reverted_at_the_deadline(
        agent: UpdateAgent, tmp_path: Path) -> None:
    assert _install(agent, tmp_path, "good", "1.0.0").state == "accepted"
    outcome = _install(agent, tmp_path, "silent", "1.1.0")
    assert (outcome.state, outcome.why) == ("reverted", "deadline")
    assert DEADLINE_S <= outcome.trial_s <= DEADLINE_S + 2 * FrameClock().step
    assert agent.counter("app") == version("1.0.0").as_counter()
    assert 'name = "good_counter"' in _running_app(agent)


def test_first_install_that_crashes_leaves_nothing_installed(agent: UpdateAgent,
                                                             tmp_path: Path) -> None:
    outcome = _install(agent, tmp_path, "crash_on_start", "1.0.0")
    assert (outcome.state, outcome.why) == ("reverted", "crashed")
    assert agent.installed("app") is None and agent.counter("app") == 0


def test_attestation_token_shows_the_new_measurement_after_acceptance(
        agent: UpdateAgent, tmp_path: Path) -> None:
    device = Device.open(tmp_path / "dev")
    key = device.keystore.public_key(device.handle("attestation"))
    config = TokenConfig(trusted_lifecycle_states=frozenset({LIFECYCLE_PSA_ROT_PROVISIONING >> 8}))

    def app_claim() -> tuple[str | None, bytes]:
        nonce = os.urandom(32)
        token = device.attestation_token(nonce, components=agent.software_components())
        claims = verify_token(token, key, nonce, config=config)
        apps = [c for c in claims.software_components if c.measurement_type == "App"]
        assert len(apps) == 1
        return apps[0].version, apps[0].measurement_value

    assert _install(agent, tmp_path, "good", "1.0.0").state == "accepted"
    v1 = app_claim()
    assert _install(agent, tmp_path, "good", "1.1.0").state == "accepted"
    v2 = app_claim()
    assert v1[0] == "1.0.0" and v2[0] == "1.1.0" and v1[1] != v2[1]
    assert _install(agent, tmp_path, "crash_on_start", "1.2.0").state == "reverted"
    assert app_claim() == v2  # the token shows what runs: the reverted-to version


def test_app_slots_inside_the_device_folder_cannot_pass_a_trial(tmp_path: Path) -> None:
    # The sandbox may not read the device folder (its keys live there), so an app kept
    # in DEVICE_DIR/slots never starts: the update reverts instead of running unsandboxed.
    device = Device.init(tmp_path / "dev")
    agent = UpdateAgent.for_device(device, product_class=PRODUCT, health=HealthCheck(
        TrialConfig(deadline_s=DEADLINE_S, results_needed=1), clock=FrameClock()),
        slots_dir=device.directory / "slots")  # no longer the default: <dir>.slots is
    outcome = _install(agent, tmp_path, "good", "1.0.0")
    assert (outcome.state, outcome.why) == ("reverted", "crashed")
    assert agent.installed("app") is None
