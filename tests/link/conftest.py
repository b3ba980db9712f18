"""Fixtures for link tests: a real fleet (PKI on disk) and provisioned devices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tinyward.fleet.pki import Fleet
from tinyward.trust.device import Device

PASSPHRASE = b"link-tests-passphrase"


@dataclass
class World:
    root: Path
    fleet: Fleet

    def device(self, name: str) -> Device:
        device = Device.init(self.root / name)
        device.install(self.fleet.enroll(device.enrolment_request, PASSPHRASE))
        return device


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path, Fleet.init(tmp_path / "fleet", PASSPHRASE))
