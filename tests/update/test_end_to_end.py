"""Signed updates end to end, every part real and in its own process: a fleet with a TUF
update repository (published with the fleet's update key), `tinyward fleet serve`, a
rollout, and `tinyward device run` fetching the target one chunk per report through its
pinned mutual-TLS link, applying it in an A/B slot, trying it and accepting or reverting it.
What the fleet's admin API says about the device is the check.

- a good app update is accepted, the running app restarts from its slot, and the
  attestation token shows the new measurement;
- a target whose bytes changed after it was published is refused (``bad-download``);
- an app that crashes on start is reverted (``crashed``), the counter not raised.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.helpers import PASSPHRASE, SERVER_PASSPHRASE, UPDATE_PASSPHRASE
from tinyward.fleet.guards import create_admin_token
from tinyward.fleet.pki import Fleet
from tinyward.fleet.rollouts import RolloutBook
from tinyward.fleet.update_repo import UpdateRepository
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.trust.attestation import TokenConfig, verify_token
from tinyward.trust.device import Device
from tinyward.update.agent import UpdateAgent
from tinyward.update.meta import Version

from .helpers import APPS, app_tar, app_version

pytestmark = pytest.mark.slow

ROOT_SECRETS = [b"first root holder: blue kettle 4417", b"second root holder: quiet lantern 92",
                b"third root holder: amber orchard 305"]
INTERVAL = 0.2
STEP_TIMEOUT = 90.0  # seconds for one step (a download of a few KiB at 0.2 s per chunk)


@dataclass
class World:
    folder: Path  # world-traversable: the sandbox's user runs apps from the slots
    fleet: Fleet
    repo: UpdateRepository
    url: str
    admin_port: int
    token: str

    def publish(self, component: str, data: bytes, version: str, product: str) -> str:
        name = self.repo.add(component, data, version=version, product_class=product)
        self.repo.publish([self.repo.offline_signer("update-signing", UPDATE_PASSPHRASE)],
                          SERVER_PASSPHRASE)
        return name

    def device(self, name: str, product: str) -> Device:
        device = Device.init(self.folder / name)
        device.install(self.fleet.enroll(device.enrolment_request, PASSPHRASE,
                                         report_interval=1.0, product_class=product))
        return device

    def admin(self, device_id: str) -> dict[str, Any]:
        import ssl

        context = ssl.create_default_context(cafile=str(self.fleet.root_ca_path))
        connection = http.client.HTTPSConnection("127.0.0.1", self.admin_port,
                                                 context=context, timeout=20)
        try:
            connection.request("GET", f"/v1/devices/{device_id}",
                               headers={"Authorization": f"Bearer {self.token}"})
            answer = connection.getresponse()
            assert answer.status == 200
            found: dict[str, Any] = json.loads(answer.read())
        finally:
            connection.close()
        return found


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    folder = Path(tempfile.mkdtemp(prefix="tinyward-e2e-", dir="/tmp"))
    folder.chmod(0o755)
    fleet = Fleet.init(folder / "fleet", PASSPHRASE, update_passphrase=UPDATE_PASSPHRASE,
                       server_passphrase=SERVER_PASSPHRASE)
    repo = UpdateRepository.init(fleet.directory, root_secrets=ROOT_SECRETS,
                                 update_signing=fleet.update_signing_token(UPDATE_PASSPHRASE),
                                 server_secret=SERVER_PASSPHRASE, root_threshold=2)
    token = create_admin_token(fleet.directory)
    announced: list[str] = []
    server, url = start_fleet_server(fleet.directory, SERVER_PASSPHRASE,
                                     extra=("--rate", "50"), announced=announced)
    admin = re.search(r"admin: https://[^:]+:(\d+)", announced[0])
    assert admin is not None
    try:
        yield World(folder, fleet, repo, url, int(admin.group(1)), token)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)


class DeviceProcess:
    """`tinyward device run` of one device, in its own process, until stopped."""

    def __init__(self, world: World, device: Device, nonce: bytes | None = None) -> None:
        self.device, self.world = device, world
        self.log = device.directory.parent / f"{device.directory.name}.log"
        self.status_file = device.directory.parent / f"{device.directory.name}.status.json"
        self.token = device.directory.parent / f"{device.directory.name}.token"
        argv = [sys.executable, "-m", "tinyward", "device", "run", str(device.directory),
                "--server", world.url, "--interval", str(INTERVAL), "--duration", "600",
                "--backoff-max", "0.5", "--status-file", str(self.status_file)]
        if nonce is not None:
            argv += ["--attest-nonce", nonce.hex(), "--attest-out", str(self.token)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log.open("w"),
                                     start_new_session=True)

    def wait_for(self, what: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll the fleet's admin API (bounded) until ``condition`` holds for the device."""
        deadline = time.monotonic() + STEP_TIMEOUT
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"device run ended: {self.log.read_text()}"
            seen = self.world.admin(self.device.device_id)
            if condition(seen):
                return seen
            time.sleep(0.2)
        raise AssertionError(f"not within {STEP_TIMEOUT:g} s: {what}; the fleet says {seen}; "
                             f"device log:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.log.read_text()


def _update(found: dict[str, Any]) -> dict[str, Any]:
    return found.get("update") or {}


def _app(world: World, app: str, version: str) -> bytes:
    work = Path(tempfile.mkdtemp(dir=world.folder))
    folder = app_version(APPS / app, work / f"{app}-{version}", version)
    return app_tar(folder, work / f"{app}-{version}.tar").read_bytes()


def _rollout(world: World, component: str, version: str, target: str) -> Any:
    return RolloutBook(world.fleet.directory).start(component, version, target, percent=100)


def _halt(world: World, rollout: Any) -> None:
    RolloutBook(world.fleet.directory).halt(rollout.rollout_id, "test over")


def _accepted(component: str, version: str) -> Callable[[dict[str, Any]], bool]:
    return lambda found: (_update(found).get("state") == "accepted"
                          and _update(found).get("versions", {}).get(component) == version)


def _timings(log: str) -> str:
    return "; ".join(re.findall(r"update of .*", log))


def test_a_good_app_update_is_delivered_applied_accepted_and_attested(world: World) -> None:
    product = "e2e-good"
    device = world.device("good", product)
    nonce = os.urandom(32)
    running = DeviceProcess(world, device, nonce)
    rollout = None
    try:
        running.wait_for("the device reports", lambda found: found["reports"] > 0)
        target = world.publish("app", _app(world, "good", "1.2.0"), "1.2.0", product)
        rollout = _rollout(world, "app", "1.2.0", target)
        found = running.wait_for("app 1.2.0 accepted", _accepted("app", "1.2.0"))
        assert _update(found)["target"] == {"component": "app", "version": "1.2.0"}
        assert _update(found).get("why") is None
        # The runner restarted the app from its new slot (results now come from it), and
        # signed the token again: it shows the slot's measurement, version 1.2.0.
        deadline = time.monotonic() + STEP_TIMEOUT
        while "application restarted" not in running.log.read_text():
            assert time.monotonic() < deadline, running.log.read_text()
            time.sleep(0.2)
    finally:
        log = running.stop()
        if rollout is not None:
            _halt(world, rollout)
    print("good app update:", _timings(log))
    opened = Device.open(device.directory)
    agent = UpdateAgent.for_device(opened)
    assert agent.installed("app") == Version(1, 2, 0)
    assert agent.counter("app") == Version(1, 2, 0).as_counter()
    key = opened.keystore.public_key(opened.handle("attestation"))
    claims = verify_token(running.token.read_bytes(), key, nonce, config=TokenConfig())
    apps = [c for c in claims.software_components if c.measurement_type == "App"]
    slot = [c for c in agent.software_components() if c.measurement_type == "App"]
    assert [(c.version, c.measurement_value) for c in apps] == \
        [("1.2.0", slot[0].measurement_value)]


def test_a_target_tampered_after_publishing_is_refused(world: World) -> None:
    product = "e2e-tampered"
    device = world.device("tampered", product)
    running = DeviceProcess(world, device)
    rollout = None
    try:
        running.wait_for("the device reports", lambda found: found["reports"] > 0)
        target = world.publish("model", os.urandom(3000), "2.0.0", product)
        # The attacker at the server changes the file's bytes, not its length.
        stored = next(world.repo.targets_dir.glob(f"*.{target}"))
        data = bytearray(stored.read_bytes())
        data[100] ^= 0xFF
        stored.write_bytes(bytes(data))
        rollout = _rollout(world, "model", "2.0.0", target)
        found = running.wait_for("the download refused", lambda found:
                                 _update(found).get("why") == "bad-download")
        assert _update(found)["state"] == "rejected"
        assert _update(found).get("versions", {}) == {}
    finally:
        running.stop()
        if rollout is not None:
            _halt(world, rollout)
    agent = UpdateAgent.for_device(Device.open(device.directory))
    assert agent.installed("model") is None and agent.counter("model") == 0


def test_an_app_that_crashes_on_start_is_reverted_and_the_counter_kept(world: World) -> None:
    product = "e2e-crash"
    device = world.device("crash", product)
    running = DeviceProcess(world, device)
    rollout = None
    try:
        running.wait_for("the device reports", lambda found: found["reports"] > 0)
        target = world.publish("app", _app(world, "good", "1.0.0"), "1.0.0", product)
        rollout = _rollout(world, "app", "1.0.0", target)
        running.wait_for("app 1.0.0 accepted", _accepted("app", "1.0.0"))
        _halt(world, rollout)
        target = world.publish("app", _app(world, "crash_on_start", "1.1.0"), "1.1.0", product)
        rollout = _rollout(world, "app", "1.1.0", target)
        found = running.wait_for("app 1.1.0 reverted", lambda found:
                                 _update(found).get("state") == "reverted")
        assert _update(found)["why"] == "crashed"
        assert _update(found)["versions"] == {"app": "1.0.0"}
        assert _update(found)["target"] == {"component": "app", "version": "1.1.0"}
    finally:
        log = running.stop()
        if rollout is not None:
            _halt(world, rollout)
    print("crashing app update:", _timings(log))
    agent = UpdateAgent.for_device(Device.open(device.directory))
    assert agent.installed("app") == Version(1, 0, 0)
    assert agent.counter("app") == Version(1, 0, 0).as_counter()
