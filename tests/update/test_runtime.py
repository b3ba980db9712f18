"""DeviceUpdates (update/runtime.py): the client and the agent joined, one ``upd`` status.

The client is a stand-in here (its states set by hand); the agent is the real one over a
real device's protected storage and slots. End to end: tests/update/test_end_to_end.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyward.trust.device import Device
from tinyward.update.agent import UpdateAgent
from tinyward.update.health import HealthCheck
from tinyward.update.runtime import DeviceUpdates

from .helpers import PRODUCT, meta, tuf_info


class FakeClient:
    def __init__(self, installed: Any) -> None:
        self.state: dict[str, Any] = {"state": "idle"}
        self.installed = installed
        self.channel = object()

    def status(self) -> dict[str, Any]:
        ver = {c: str(self.installed(c)) for c in ("app", "model") if self.installed(c)}
        return {**self.state, "ver": ver}

    def close(self) -> None:
        pass


def _updates(tmp_path: Path, accepted: list[str]) -> tuple[DeviceUpdates, FakeClient]:
    device = Device.init(tmp_path / "dev")
    agent = UpdateAgent.for_device(device, product_class=PRODUCT, health=HealthCheck(),
                                   slots_dir=tmp_path / "slots")
    made: list[FakeClient] = []

    def make(updates: DeviceUpdates) -> Any:
        made.append(FakeClient(updates.installed))
        return made[0]

    return DeviceUpdates(agent, make, on_accepted=accepted.append), made[0]


def _apply(updates: DeviceUpdates, tmp_path: Path, version: str) -> None:
    target = tmp_path / f"model-{version}.bin"
    target.write_bytes(b"weights " + version.encode())
    length, hashes = tuf_info(target)
    updates._apply("model", target, meta("model", version), length, hashes)


def test_one_status_client_while_downloading_agent_once_it_has_the_target(
        tmp_path: Path) -> None:
    accepted: list[str] = []
    updates, client = _updates(tmp_path, accepted)
    assert updates.status() == {"state": "idle", "ver": {}}
    client.state = {"state": "downloading", "tgt": {"model": "1.0.0"}}
    assert updates.status() == {"state": "downloading", "ver": {}, "tgt": {"model": "1.0.0"}}
    client.state = {"state": "staged", "tgt": {"model": "1.0.0"}}  # handed over
    _apply(updates, tmp_path, "1.0.0")
    assert updates.status() == {"state": "accepted", "ver": {"model": "1.0.0"},
                                "tgt": {"model": "1.0.0"}}
    assert accepted == ["model"]
    # The client refuses the next offer: its status, with the agent's versions.
    client.state = {"state": "rejected", "why": "bad-download", "tgt": {"model": "1.1.0"}}
    assert updates.status() == {"state": "rejected", "why": "bad-download",
                                "ver": {"model": "1.0.0"}, "tgt": {"model": "1.1.0"}}


def test_the_agents_refusal_is_the_status_and_nothing_restarts(tmp_path: Path) -> None:
    accepted: list[str] = []
    updates, client = _updates(tmp_path, accepted)
    client.state = {"state": "staged"}
    _apply(updates, tmp_path, "1.0.0")
    _apply(updates, tmp_path, "1.0.0")  # the same version again: a rollback
    assert updates.status() == {"state": "rejected", "why": "rollback",
                                "ver": {"model": "1.0.0"}, "tgt": {"model": "1.0.0"}}
    assert accepted == ["model"]
    assert [o.state for o in updates.outcomes] == ["accepted", "rejected"]


def test_a_restarted_device_reports_what_the_agent_recorded(tmp_path: Path) -> None:
    updates, client = _updates(tmp_path, [])
    client.state = {"state": "staged"}
    _apply(updates, tmp_path, "1.0.0")
    device = Device.open(tmp_path / "dev")
    agent = UpdateAgent.for_device(device, product_class=PRODUCT, slots_dir=tmp_path / "slots")
    again = DeviceUpdates(agent, lambda u: FakeClient(u.installed))
    assert again.status() == {"state": "accepted", "ver": {"model": "1.0.0"},
                              "tgt": {"model": "1.0.0"}}
