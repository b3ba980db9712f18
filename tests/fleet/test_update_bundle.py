"""The device bundle carries the update repository's trusted root and the product class
(format tinyward-device-bundle/3); the device keeps them in protected storage."""

from __future__ import annotations

import base64
import contextlib
import json
import random
from pathlib import Path

import pytest

from tests.fleet.helpers import PASSPHRASE, SERVER_PASSPHRASE
from tests.fleet.test_update_repo import (
    NEW_ROOT,
    ROOT_SECRETS,
    make_repo,
)
from tinyward.fleet.bundle import BUNDLE_FORMAT_UPDATES, DeviceBundle
from tinyward.fleet.errors import BadBundle, BadFleet
from tinyward.fleet.pki import Fleet
from tinyward.fleet.update_repo import RootChange, UpdateRepository
from tinyward.trust.device import BundleMismatch, Device


@pytest.fixture
def world(tmp_path: Path) -> tuple[Fleet, UpdateRepository, Device, DeviceBundle]:
    repo = make_repo(tmp_path)
    fleet = Fleet.open(repo.fleet_dir)
    device = Device.init(tmp_path / "device")
    bundle = fleet.enroll(device.enrolment_request, PASSPHRASE, product_class="pump-sensor")
    return fleet, repo, device, bundle


def test_bundle_carries_update_root_and_product_class(world: tuple) -> None:  # type: ignore[type-arg]
    fleet, repo, _, bundle = world
    assert bundle.update_root == repo.trusted_root()
    assert bundle.product_class == "pump-sensor"
    document = json.loads(bundle.to_json())
    assert document["format"] == BUNDLE_FORMAT_UPDATES
    assert base64.b64decode(document["update_root"]) == repo.trusted_root()
    parsed = DeviceBundle.from_json(bundle.to_json())
    assert parsed == bundle
    # Recorded with the device: the bundle made again, and after a revoke, keeps it.
    assert fleet.device(bundle.device_id).product_class == "pump-sensor"
    assert fleet.bundle(bundle.device_id).product_class == "pump-sensor"


def test_bundle_after_root_rotation_carries_newest_root(world: tuple) -> None:  # type: ignore[type-arg]
    fleet, repo, _, bundle = world
    repo.propose_root(RootChange(replace=("root-1",)), {"root-4": NEW_ROOT}, SERVER_PASSPHRASE)
    repo.sign("root", [repo.offline_signer("root-2", ROOT_SECRETS[1]),
                       repo.offline_signer("root-3", ROOT_SECRETS[2])], SERVER_PASSPHRASE)
    again = fleet.bundle(bundle.device_id)
    assert json.loads(again.update_root or b"")["signed"]["version"] == 2


def test_device_stores_update_root_and_product_class(world: tuple) -> None:  # type: ignore[type-arg]
    _, repo, device, bundle = world
    assert device.update_trusted_root() is None and device.product_class() is None
    device.install(DeviceBundle.from_json(bundle.to_json()))
    reopened = Device.open(device.directory)
    assert reopened.update_trusted_root() == repo.trusted_root()
    assert reopened.product_class() == "pump-sensor"


def test_refresh_cannot_change_product_class_or_roll_root(world: tuple) -> None:  # type: ignore[type-arg]
    _, _, device, bundle = world
    device.install(bundle)
    first_root = device.update_trusted_root()
    from dataclasses import replace

    other = replace(bundle, product_class="door-sensor")
    with pytest.raises(BundleMismatch, match="product class"):
        device.refresh(other)
    assert device.product_class() == "pump-sensor"
    device.refresh(replace(bundle, update_root=b'{"older": "root"}'))
    assert device.update_trusted_root() == first_root


def test_old_formats_still_read_and_written(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)  # no update repository
    device = Device.init(tmp_path / "device")
    bundle = fleet.enroll(device.enrolment_request, PASSPHRASE)
    assert bundle.update_root is None and bundle.product_class is None
    assert json.loads(bundle.to_json())["format"] in ("tinyward-device-bundle/1",
                                                      "tinyward-device-bundle/2")
    device.install(DeviceBundle.from_json(bundle.to_json()))
    assert device.update_trusted_root() is None and device.product_class() is None


def _tampered(bundle: DeviceBundle, **fields: object) -> bytes:
    document = json.loads(bundle.to_json())
    document.update(fields)
    return json.dumps(document).encode()


def test_attack_bundle_update_root_with_forged_keys_refused(world: tuple) -> None:  # type: ignore[type-arg]
    """An update root whose signed part was changed (an attacker's keys) is refused."""
    _, _, _, bundle = world
    root = json.loads(bundle.update_root or b"")
    root["signed"]["roles"]["targets"]["threshold"] = 2
    forged = base64.b64encode(json.dumps(root).encode()).decode()
    with pytest.raises(BadBundle, match="not signed by its own threshold"):
        DeviceBundle.from_json(_tampered(bundle, update_root=forged))


@pytest.mark.parametrize("value, reason", [
    ("not base64!", "not base64"),
    (base64.b64encode(b'{"signed": {}}').decode(), "not TUF root metadata"),
    (42, "must be base64"),
])
def test_bundle_malformed_update_root_refused(world: tuple, value: object,  # type: ignore[type-arg]
                                              reason: str) -> None:
    _, _, _, bundle = world
    with pytest.raises(BadBundle, match=reason):
        DeviceBundle.from_json(_tampered(bundle, update_root=value))


def test_bundle_malformed_product_class_refused(world: tuple) -> None:  # type: ignore[type-arg]
    _, _, _, bundle = world
    for bad in ("../x", "pump\n", 7, ""):
        with pytest.raises(BadBundle, match="product_class"):
            DeviceBundle.from_json(_tampered(bundle, product_class=bad))


def test_v3_bundle_missing_update_fields_refused(world: tuple) -> None:  # type: ignore[type-arg]
    _, _, _, bundle = world
    document = json.loads(bundle.to_json())
    del document["product_class"]
    with pytest.raises(BadBundle, match="lacks product_class"):
        DeviceBundle.from_json(json.dumps(document).encode())
    document = json.loads(bundle.to_json())
    document["format"] = "tinyward-device-bundle/2"
    with pytest.raises(BadBundle, match="unknown keys"):
        DeviceBundle.from_json(json.dumps(document).encode())


def test_enroll_bad_product_class_refused(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    device = Device.init(tmp_path / "device")
    with pytest.raises(BadFleet, match="product class"):
        fleet.enroll(device.enrolment_request, PASSPHRASE, product_class="a/b")
    assert fleet.devices() == []


def _mutate(value: object, rng: random.Random) -> None:
    choices: list[object] = [None, 1, "x", [], {}, -1, 2**70, "ecdsa", True]
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.3:
            value[key] = rng.choice(choices)
        elif roll < 0.4:
            del value[key]
        else:
            _mutate(value[key], rng)
    elif isinstance(value, list) and value:
        index = rng.randrange(len(value))
        if rng.random() < 0.4:
            value[index] = rng.choice(choices)
        else:
            _mutate(value[index], rng)


def test_mutated_update_root_raises_only_bad_bundle(world: tuple) -> None:  # type: ignore[type-arg]
    """Structure-aware mutations of the root (types, missing fields): python-tuf's parse
    and verification errors all come out as BadBundle, never as another exception."""
    _, _, _, bundle = world
    rng = random.Random(14)
    good = json.loads(bundle.update_root or b"")
    for _ in range(300):
        document = json.loads(json.dumps(good))
        _mutate(document, rng)
        _mutate(document, rng)
        data = base64.b64encode(json.dumps(document).encode()).decode()
        with contextlib.suppress(BadBundle):
            DeviceBundle.from_json(_tampered(bundle, update_root=data))


def test_damaged_update_repository_refuses_enrolment_before_recording(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    fleet = Fleet.open(repo.fleet_dir)
    (repo.metadata_dir / "1.root.json").write_text("{}")
    device = Device.init(tmp_path / "device")
    with pytest.raises(BadFleet, match=r"1\.root\.json"):
        fleet.enroll(device.enrolment_request, PASSPHRASE, product_class="pump-sensor")
    assert fleet.devices() == []  # nothing recorded: enrol again once it is repaired
