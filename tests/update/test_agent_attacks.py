"""An outside attacker's look at the apply path: error kinds, order, concurrency, disk,
and what happens to a slot while its trial runs (file components: fast).

Each test is the attack; a comment says what it did before the defence."""

from __future__ import annotations

import json
import resource
import signal
import threading
from pathlib import Path

import pytest

from tinyward.trust.device import Device
from tinyward.update.agent import UpdateAgent
from tinyward.update.errors import UnsafeSlots, UpdateBusy
from tinyward.update.health import HealthCheck, Verdict
from tinyward.update.slots import Slots

from .helpers import PRODUCT, meta, tuf_info, version

#: a bound on every wait for another thread (never reached when the code is right)
WAIT_S = 60


def _target(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "targets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def _agent(device: Device, slots: Path, health: HealthCheck | None = None) -> UpdateAgent:
    return UpdateAgent(device.storage, Slots(slots), product_class=PRODUCT,
                       device_id=device.device_id, health=health or HealthCheck())


def _apply(agent: UpdateAgent, tmp_path: Path, component: str, ver: str, data: bytes):
    target = _target(tmp_path, f"{component}-{ver}", data)
    length, hashes = tuf_info(target)
    return agent.apply(component, target, meta(component, ver), length, hashes)


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device.init(tmp_path / "dev")


# ---- error kinds: whatever the new version or the disk throws, the device ends at rest --


def test_trial_raising_an_unexpected_exception_reverts_instead_of_running_unaccepted(
        device: Device, tmp_path: Path) -> None:
    # The config loader has a bug (KeyError on a config without "rate"). Before: the
    # KeyError escaped apply() with the *unaccepted* version active in the slot record,
    # so active_content() handed it to the runner until the next restart.
    def load_config(path: Path) -> object:
        return json.loads(path.read_bytes())["rate"]

    agent = _agent(device, tmp_path / "slots", HealthCheck(loaders={"config": load_config}))
    assert _apply(agent, tmp_path, "config", "1.0.0", b'{"rate": 1}').state == "accepted"
    outcome = _apply(agent, tmp_path, "config", "1.1.0", b'{"speed": 2}')
    assert (outcome.state, outcome.why) == ("reverted", "health-failed")
    assert "KeyError" in outcome.detail
    assert agent.active_content("config").read_bytes() == b'{"rate": 1}'
    assert agent.counter("config") == version("1.0.0").as_counter()


class _ExplodingSlots(Slots):
    """A slot writer that fails with an error nobody planned for (before the archive
    fix, a chain of tar headers raised RecursionError right here)."""

    def write(self, *args: object, **kw: object) -> str:
        raise RecursionError("maximum recursion depth exceeded")


def test_unexpected_error_while_staging_ends_failed_and_the_next_update_is_not_busy(
        device: Device, tmp_path: Path) -> None:
    # Before: the error escaped apply() with "staged" recorded: every later update was
    # refused as busy until the device restarted.
    agent = UpdateAgent(device.storage, _ExplodingSlots(tmp_path / "slots"),
                        product_class=PRODUCT, device_id=device.device_id)
    outcome = _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    assert (outcome.state, outcome.why) == ("failed", "bug")
    assert "RecursionError" in outcome.detail
    assert _apply(_agent(device, tmp_path / "slots"), tmp_path, "config", "1.0.0",
                  b"v1").state == "accepted"


@pytest.mark.parametrize("attack", ["deleted", "older_copy_put_back"])
def test_counter_record_deleted_or_rolled_back_fails_closed_as_tampered_not_stuck(
        device: Device, tmp_path: Path, attack: str) -> None:
    # Attack: delete the anti-rollback counter's record, or put an older copy back (then
    # offer an old version). Protected storage knows (RecordMissing, RecordRolledBack),
    # so nothing rolls back; but before, the error escaped apply() and left the device
    # "downloading": every later update busy until a restart.
    agent = _agent(device, tmp_path / "slots")
    record = device.directory / "storage" / "update.counter.model.rec"
    _apply(agent, tmp_path, "model", "1.5.0", b"m1")
    older = record.read_bytes()
    _apply(agent, tmp_path, "model", "2.0.0", b"m2")
    if attack == "deleted":
        record.unlink()
    else:
        record.write_bytes(older)
    for ver in ("1.0.0", "3.0.0"):
        outcome = _apply(agent, tmp_path, "model", ver, b"m" + ver.encode())
        assert (outcome.state, outcome.why) == ("failed", "tampered")
    assert agent.active_content("model").read_bytes() == b"m2"
    assert agent.installed("model") == version("2.0.0")


# ---- order and concurrency -----------------------------------------------------------


def test_second_agent_cannot_overwrite_the_slot_a_running_trial_reverts_to(
        device: Device, tmp_path: Path) -> None:
    # Two processes apply at once on one device (a second agent object stands for the
    # second process: its own file descriptors, its own idea of the state, started
    # before A's update began). Before: B, idle in its own memory, wrote its target into
    # the *inactive* slot, the one holding the version A's trial reverts to.
    started, release = threading.Event(), threading.Event()

    def slow_loader(path: Path) -> object:
        started.set()
        assert release.wait(WAIT_S)
        raise ValueError("the new config is broken")  # A's trial fails: revert

    a = _agent(device, tmp_path / "slots", HealthCheck(loaders={"config": slow_loader}))
    assert _apply(_agent(device, tmp_path / "slots"), tmp_path, "config", "1.0.0",
                  b"v1").state == "accepted"
    b = _agent(device, tmp_path / "slots")  # the other process, already running
    outcomes = []
    worker = threading.Thread(target=lambda: outcomes.append(
        _apply(a, tmp_path, "config", "2.0.0", b"v2 broken")))
    worker.start()
    try:
        assert started.wait(WAIT_S)
        with pytest.raises(UpdateBusy):
            _apply(b, tmp_path, "config", "3.0.0", b"v3 from B")
        with pytest.raises(UpdateBusy):
            a.offer("model", version("1.0.0"))  # the same agent, another thread
    finally:
        release.set()
        worker.join(WAIT_S)
    assert (outcomes[0].state, outcomes[0].why) == ("reverted", "health-failed")
    assert a.active_content("config").read_bytes() == b"v1"
    a.check_running()


def test_out_of_order_calls_are_refused_and_change_nothing(device: Device,
                                                           tmp_path: Path) -> None:
    from tinyward.errors import Misuse
    from tinyward.update.errors import Rollback

    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    with pytest.raises(Misuse):
        agent.activate()  # nothing staged
    with pytest.raises(Misuse):
        agent.refuse(Rollback("x"))  # nothing offered
    agent.offer("config", version("2.0.0"))
    with pytest.raises(UpdateBusy):  # another component while one downloads
        _apply(agent, tmp_path, "model", "1.0.0", b"m1")
    target = _target(tmp_path, "c2", b"v2")
    length, hashes = tuf_info(target)
    assert agent.stage("config", target, meta("config", "2.0.0"), length, hashes) is None
    with pytest.raises(UpdateBusy):
        agent.refuse(Rollback("late"), "config", version("2.0.0"))
    with pytest.raises(UpdateBusy):
        agent.stage("config", target, meta("config", "2.0.0"), length, hashes)
    assert agent.activate().state == "accepted"
    assert agent.active_content("config").read_bytes() == b"v2"


def test_same_content_with_a_higher_version_installs_and_keeps_the_older_slot(
        device: Device, tmp_path: Path) -> None:
    # A target whose measurement equals the running one: nothing is shared between the
    # slots, the counter moves on, and the older slot is still there for a revert.
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"same")
    first = agent.software_components()[0].measurement_value
    assert _apply(agent, tmp_path, "config", "1.0.1", b"same").state == "accepted"
    assert agent.software_components()[0].measurement_value == first
    assert agent.counter("config") == version("1.0.1").as_counter()
    assert agent.slots.content("config", "a").read_bytes() == b"same"
    assert _apply(agent, tmp_path, "config", "1.0.1", b"same").why == "rollback"


# ---- the disk ------------------------------------------------------------------------


def test_disk_full_while_writing_the_slot_fails_and_keeps_the_running_version(
        device: Device, tmp_path: Path) -> None:
    # A real write failure from the kernel (RLIMIT_FSIZE: EFBIG, as ENOSPC would be):
    # the running version and the counter stay, and the next update is not busy.
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "model", "1.0.0", b"m1")
    big = _target(tmp_path, "m2", b"\1" * (1 << 20))
    length, hashes = tuf_info(big)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, hard))
    try:
        outcome = agent.apply("model", big, meta("model", "2.0.0"), length, hashes)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert (outcome.state, outcome.why) == ("failed", "io-error")
    assert agent.active_content("model").read_bytes() == b"m1"
    assert not agent.slots.folder("model", "b").exists()
    assert agent.apply("model", big, meta("model", "2.0.0"), length, hashes).state == "accepted"


def test_slot_changed_while_its_trial_runs_is_reverted_not_accepted(device: Device,
                                                                   tmp_path: Path) -> None:
    # Whoever can write the slot during the trial (the app itself, were its sandbox to
    # let it) changes the code after it was measured. Before: accepted, counter raised,
    # and only the next start found the slot "changed on disk".
    def tamper(path: Path) -> object:
        path.write_bytes(b"v2 changed during its trial")
        return None

    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    agent.health = HealthCheck(loaders={"config": tamper})
    outcome = _apply(agent, tmp_path, "config", "2.0.0", b"v2")
    assert (outcome.state, outcome.why) == ("reverted", "slot-corrupt")
    assert agent.counter("config") == version("1.0.0").as_counter()
    assert agent.active_content("config").read_bytes() == b"v1"


class _Verdicts(HealthCheck):
    def run(self, component: str, content: Path) -> Verdict:
        raise AssertionError("a broken health check")


def test_health_check_that_raises_reverts(device: Device, tmp_path: Path) -> None:
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    agent.health = _Verdicts()
    outcome = _apply(agent, tmp_path, "config", "2.0.0", b"v2")
    assert (outcome.state, outcome.why) == ("reverted", "health-failed")
    assert agent.active_content("config").read_bytes() == b"v1"


# ---- where the slots live --------------------------------------------------------------


@pytest.mark.parametrize("attack", ["world_writable", "group_writable", "symlink",
                                    "other_owner", "writable_parent"])
def test_slots_folder_others_could_change_is_refused(device: Device, tmp_path: Path,
                                                     attack: str) -> None:
    # Whoever can write the slots folder (or the folder above it) can swap a slot for a
    # symlink between its check and the switch (TOCTOU), or change the app during its
    # trial. Before: any folder was used.
    import os

    parent = tmp_path / "p"
    parent.mkdir(mode=0o755)
    slots = parent / "slots"
    if attack == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o755)
        slots.symlink_to(tmp_path / "elsewhere")
    else:
        slots.mkdir(mode=0o755)
    if attack == "world_writable":
        slots.chmod(0o777)
    elif attack == "group_writable":
        slots.chmod(0o775)
    elif attack == "other_owner":
        os.chown(slots, 65534, 65534)
    elif attack == "writable_parent":
        parent.chmod(0o777)  # not sticky: anyone may rename "slots" away
    with pytest.raises(UnsafeSlots):
        _apply(_agent(device, slots), tmp_path, "config", "1.0.0", b"v1")
    with pytest.raises(UnsafeSlots):
        UpdateAgent.for_device(device, product_class=PRODUCT, slots_dir=slots)


def test_sticky_world_writable_parent_is_allowed(device: Device, tmp_path: Path) -> None:
    parent = tmp_path / "p"
    parent.mkdir()
    parent.chmod(0o1777)  # like /tmp: nobody else may rename what root owns in it
    agent = _agent(device, parent / "slots")
    assert _apply(agent, tmp_path, "config", "1.0.0", b"v1").state == "accepted"


def test_slots_folder_redirected_after_install_is_refused(device: Device,
                                                          tmp_path: Path) -> None:
    # The slots folder is recorded in the sealed slot record: a device pointed at another
    # folder (a copy an attacker keeps) refuses it instead of running from it.
    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    import shutil

    shutil.copytree(tmp_path / "slots", tmp_path / "copy")
    with pytest.raises(UnsafeSlots, match="recorded"):
        _agent(device, tmp_path / "copy")


def test_slot_swapped_for_a_symlink_between_check_and_switch_is_reverted(
        device: Device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # TOCTOU: right after the slot is checked, its content is swapped for a link to other
    # bytes (only the core's user can, now that the folder is checked; root is used here
    # to play the attacker). The trial reads the swapped content; the measurement after
    # the trial refuses the link, so the update is reverted, not accepted.
    evil = _target(tmp_path, "evil", b"v2 EVIL")
    verify = Slots.verify
    seen = []

    def verify_then_swap(self: Slots, component: str, slot: str, *a: object) -> object:
        info = verify(self, component, slot, *a)  # type: ignore[arg-type]
        content = self.content(component, slot)
        content.unlink()
        content.symlink_to(evil)
        return info

    def loader(path: Path) -> object:
        seen.append(path.read_bytes())
        return None

    agent = _agent(device, tmp_path / "slots", HealthCheck(loaders={"config": loader}))
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    monkeypatch.setattr(Slots, "verify", verify_then_swap)
    outcome = _apply(agent, tmp_path, "config", "2.0.0", b"v2 good")
    assert seen[-1] == b"v2 EVIL"  # the swap happened
    assert (outcome.state, outcome.why) == ("reverted", "slot-corrupt")
    assert agent.active_content("config").read_bytes() == b"v1"
    assert agent.counter("config") == version("1.0.0").as_counter()


def test_target_that_is_a_fifo_is_refused_not_waited_on(device: Device,
                                                        tmp_path: Path) -> None:
    # A target path that is a FIFO (planted in the download folder, or a fetcher's bug):
    # before, open() blocked for a writer forever, holding the update lock.
    import os

    fifo = tmp_path / "target.fifo"
    os.mkfifo(fifo)
    agent = _agent(device, tmp_path / "slots")
    outcomes = []
    worker = threading.Thread(target=lambda: outcomes.append(
        agent.apply("config", fifo, meta("config", "1.0.0"), 3, {"sha256": "0" * 64})),
        daemon=True)
    worker.start()
    worker.join(WAIT_S)
    if worker.is_alive():  # free the worker: a writer lets its open() return
        with open(fifo, "wb") as writer:
            writer.write(b"abc")
        worker.join(WAIT_S)
        pytest.fail("apply() waited on a FIFO")
    assert (outcomes[0].state, outcomes[0].why) == ("rejected", "length")


def test_disk_full_at_the_switch_fails_the_update_and_is_not_busy(
        device: Device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The switch is a protected-storage write; the disk fills up just then (an injected
    # ENOSPC). Before: the OSError escaped apply(), the record still said "staged", and
    # every later update was busy until a restart.
    import errno

    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    write = type(device.storage).write

    def full_at_switch(self: object, name: str, value: bytes) -> int:
        if name == "update.slots" and b'"trial": true' in value:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, name, value)  # type: ignore[arg-type]

    monkeypatch.setattr(type(device.storage), "write", full_at_switch)
    outcome = _apply(agent, tmp_path, "config", "2.0.0", b"v2")
    assert (outcome.state, outcome.why) == ("failed", "io-error")
    assert agent.active_content("config").read_bytes() == b"v1"
    monkeypatch.undo()
    assert _apply(agent, tmp_path, "config", "2.0.0", b"v2").state == "accepted"


def test_disk_full_at_the_confirm_never_hands_out_the_unconfirmed_version(
        device: Device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The trial passed but recording the acceptance fails (an injected ENOSPC): the
    # record says "trial". Before: active_content() (what the runner starts) was the
    # unconfirmed version until the next start reverted it.
    import errno

    agent = _agent(device, tmp_path / "slots")
    _apply(agent, tmp_path, "config", "1.0.0", b"v1")
    write = type(device.storage).write

    def full_at_confirm(self: object, name: str, value: bytes) -> int:
        if name == "update.slots" and b'"state": "accepted"' in value:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, name, value)  # type: ignore[arg-type]

    monkeypatch.setattr(type(device.storage), "write", full_at_confirm)
    with pytest.raises(OSError):
        _apply(agent, tmp_path, "config", "2.0.0", b"v2")
    monkeypatch.undo()
    assert agent.active_content("config").read_bytes() == b"v1"
    assert agent.counter("config") == version("1.0.0").as_counter()
    assert [c.version for c in agent.software_components()] == ["1.0.0"]
    rebooted = _agent(device, tmp_path / "slots")
    assert rebooted.on_start()["state"] == "reverted"
    assert rebooted.active_content("config").read_bytes() == b"v1"
