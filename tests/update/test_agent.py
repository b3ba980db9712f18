"""The update agent with file components (fast): accept, refuse, revert, recover, attest.

The application trials in the real sandbox are in test_trial_apps.py; power cuts in
test_power_cut.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyward.trust.device import Device
from tinyward.update.agent import UpdateAgent
from tinyward.update.errors import UpdateBusy
from tinyward.update.health import HealthCheck
from tinyward.update.slots import Slots

from .helpers import PRODUCT, meta, tuf_info, version


class PowerCut(BaseException):
    """Raised from inside a step to stop the agent dead, as a power cut would."""


def _target(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "targets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def _agent(device: Device, slots: Path, **health: object) -> UpdateAgent:
    return UpdateAgent(device.storage, Slots(slots), product_class=PRODUCT,
                       device_id=device.device_id, health=HealthCheck(**health))


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device.init(tmp_path / "dev")


def _apply(agent: UpdateAgent, tmp_path: Path, component: str, ver: str, data: bytes):
    target = _target(tmp_path, f"{component}-{ver}", data)
    length, hashes = tuf_info(target)
    return agent.apply(component, target, meta(component, ver), length, hashes)


def test_config_update_is_accepted_then_the_counter_is_raised(device: Device,
                                                             tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    assert agent.status() == {"state": "idle", "ver": {}}
    outcome = _apply(agent, tmp_path, "config", "1.0.0", b"rate = 1\n")
    assert (outcome.state, outcome.why) == ("accepted", None)
    assert agent.status() == {"state": "accepted", "ver": {"config": "1.0.0"}}
    assert agent.counter("config") == version("1.0.0").as_counter()
    assert agent.active_content("config").read_bytes() == b"rate = 1\n"


def test_trial_that_reverts_never_raises_the_counter(device: Device, tmp_path: Path) -> None:
    link_up = [True]
    agent = _agent(device, tmp_path / "slots", link=lambda: link_up[0])
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    before = agent.counter("config")
    link_up[0] = False  # the new version cannot reach the fleet
    outcome = _apply(agent, tmp_path, "config", "1.1.0", b"v2")
    assert (outcome.state, outcome.why) == ("reverted", "link-down")
    assert agent.counter("config") == before
    assert agent.installed("config") == version("1.0.0")
    assert agent.active_content("config").read_bytes() == b"v1"
    assert agent.status() == {"state": "reverted", "ver": {"config": "1.0.0"}, "why": "link-down"}
    # the same version may be offered again once fixed: it was never accepted
    link_up[0] = True
    assert _apply(agent, tmp_path, "config", "1.1.0", b"v2").state == "accepted"


def test_detector_that_does_not_load_is_reverted(device: Device, tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    outcome = _apply(agent, tmp_path, "detector", "1.0.0", b"not a model file")
    assert (outcome.state, outcome.why) == ("reverted", "health-failed")
    assert agent.installed("detector") is None and agent.counter("detector") == 0


@pytest.mark.parametrize("ver", ["1.0.0", "0.9.9"])
def test_rollback_or_replay_is_rejected_and_running_version_untouched(
        device: Device, tmp_path: Path, ver: str) -> None:
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "model", "1.0.0", b"model v1")
    outcome = _apply(agent, tmp_path, "model", ver, b"older model")
    assert (outcome.state, outcome.why) == ("rejected", "rollback")
    assert agent.active_content("model").read_bytes() == b"model v1"
    assert agent.status()["why"] == "rollback"


def test_version_at_or_below_the_counter_is_rejected_even_if_the_slot_says_less(
        device: Device, tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "model", "2.0.0", b"m2")
    # the counter, not the slot, is the floor: a record claiming less changes nothing
    assert _apply(agent, tmp_path, "model", "2.0.0", b"m2 again").why == "rollback"


def test_other_products_target_is_rejected(device: Device, tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    target = _target(tmp_path, "x", b"cfg")
    length, hashes = tuf_info(target)
    outcome = agent.apply("config", target, meta("config", "1.0.0", product="camera"),
                          length, hashes)
    assert (outcome.state, outcome.why) == ("rejected", "wrong-product")
    assert agent.installed("config") is None


def test_target_whose_meta_names_another_component_is_rejected(device: Device,
                                                              tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    target = _target(tmp_path, "x", b"cfg")
    length, hashes = tuf_info(target)
    outcome = agent.apply("app", target, meta("config", "1.0.0"), length, hashes)
    assert (outcome.state, outcome.why) == ("rejected", "bad-meta")


def test_slot_corrupted_after_download_is_not_switched_to(device: Device,
                                                          tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "model", "1.0.0", b"model v1")
    target = _target(tmp_path, "m2", b"model v2, good")
    length, hashes = tuf_info(target)
    assert agent.stage("model", target, meta("model", "2.0.0"), length, hashes) is None
    staged = agent.slots.content("model", "b")
    staged.write_bytes(b"model v2, EVIL")  # same length, other bytes
    outcome = agent.activate()
    assert (outcome.state, outcome.why) == ("rejected", "slot-corrupt")
    assert agent.active_content("model").read_bytes() == b"model v1"
    assert agent.counter("model") == version("1.0.0").as_counter()
    assert not staged.exists()  # discarded


def test_target_longer_than_signed_length_is_rejected(device: Device, tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    target = _target(tmp_path, "c", b"cfg" * 100)
    length, hashes = tuf_info(target)
    with open(target, "ab") as grow:  # endless data after TUF's check
        grow.write(b"more")
    outcome = agent.apply("config", target, meta("config", "1.0.0"), length, hashes)
    assert (outcome.state, outcome.why) == ("rejected", "length")


def test_a_second_update_while_one_is_staged_is_busy(device: Device, tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    target = _target(tmp_path, "c", b"cfg")
    length, hashes = tuf_info(target)
    agent.stage("config", target, meta("config", "1.0.0"), length, hashes)
    with pytest.raises(UpdateBusy):
        agent.stage("model", target, meta("model", "1.0.0"), length, hashes)
    assert agent.activate().state == "accepted"


def test_power_cut_while_staged_fails_the_update_and_keeps_the_old(device: Device,
                                                                   tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    target = _target(tmp_path, "c2", b"v2")
    length, hashes = tuf_info(target)
    agent.stage("config", target, meta("config", "2.0.0"), length, hashes)
    rebooted = _agent(device, tmp_path / "slots")
    status = rebooted.on_start()
    assert status == {"state": "failed", "ver": {"config": "1.0.0"}, "why": "interrupted"}
    assert not rebooted.slots.folder("config", "b").exists()


def test_power_cut_during_trial_reverts_and_never_raises_the_counter(
        device: Device, tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")

    def cut() -> bool:
        raise PowerCut

    during = _agent(device, tmp_path / "slots", link=cut)
    with pytest.raises(PowerCut):
        _apply(during, tmp_path, "config", "2.0.0", b"v2")
    assert during.installed("config") == version("2.0.0")  # it was on trial
    rebooted = _agent(device, tmp_path / "slots")
    assert rebooted.on_start() == {"state": "reverted", "ver": {"config": "1.0.0"},
                                   "why": "interrupted"}
    assert rebooted.counter("config") == version("1.0.0").as_counter()
    assert rebooted.active_content("config").read_bytes() == b"v1"


def test_power_cut_between_confirm_and_counter_raises_it_at_start(
        device: Device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = _agent(device, tmp_path / "slots")

    def cut(*_a: object) -> None:
        raise PowerCut

    monkeypatch.setattr(UpdateAgent, "_raise_counter", cut)
    with pytest.raises(PowerCut):
        _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    monkeypatch.undo()
    assert agent.counter("config") == 0
    rebooted = _agent(device, tmp_path / "slots")
    assert rebooted.on_start()["state"] == "accepted"
    assert rebooted.counter("config") == version("1.0.0").as_counter()


def test_running_slot_changed_on_disk_is_detected_at_start(device: Device,
                                                           tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    agent.active_content("config").write_bytes(b"v0")
    with pytest.raises(Exception, match="changed on disk"):
        _agent(device, tmp_path / "slots").on_start()


def test_refusal_by_the_delivery_is_reported_and_nothing_changes(device: Device,
                                                                tmp_path: Path) -> None:
    from tinyward.update.errors import Rollback

    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    outcome = agent.refuse(Rollback("TUF: version below the trusted one"), "config",
                           version("0.5.0"))
    assert (outcome.state, outcome.why) == ("rejected", "rollback")
    assert agent.status() == {"state": "rejected", "ver": {"config": "1.0.0"}, "why": "rollback"}
    agent.offer("config", version("2.0.0"))  # a download starts, then fails TUF's checks
    assert agent.refuse(Rollback("mix-and-match")).state == "rejected"


def test_old_slot_record_put_back_to_run_the_older_slot_is_detected(device: Device,
                                                                    tmp_path: Path) -> None:
    # Attack: with the disk, copy back the slot record from when 1.0.0 was active; the
    # old version still lies in the other slot, so the pointer alone would downgrade.
    from tinyward.trust.errors import RecordRolledBack

    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1 (vulnerable)")
    record = device.directory / "storage" / "update.slots.rec"
    old = record.read_bytes()
    _apply(agent, tmp_path, "config", "2.0.0", b"v2 (fixed)")
    record.write_bytes(old)
    with pytest.raises(RecordRolledBack):
        _agent(device, tmp_path / "slots").on_start()
