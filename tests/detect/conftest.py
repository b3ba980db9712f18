"""Fixtures for the detect tests: the shared public data, read in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_or_skip

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
MQTT = DATA / "mqttset"
SKAB = DATA / "skab"


@pytest.fixture(scope="session")
def mqtt() -> Path:
    if not MQTT.is_dir():
        require_or_skip(f"public MQTTset data not found at {MQTT} (../shared; see README)")
    return MQTT


@pytest.fixture(scope="session")
def skab() -> Path:
    if not SKAB.is_dir():
        require_or_skip(f"public SKAB data not found at {SKAB} (../shared; see README)")
    return SKAB
