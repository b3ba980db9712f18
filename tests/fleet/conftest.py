"""Fixtures for the fleet tests: a fleet made at a fixed time, and a second, unrelated one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fleet.helpers import PASSPHRASE, UPDATE_PASSPHRASE
from tinyward.fleet.pki import Fleet

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet.init(tmp_path / "fleet", PASSPHRASE, now=NOW, update_passphrase=UPDATE_PASSPHRASE)


@pytest.fixture
def other_fleet(tmp_path: Path) -> Fleet:
    return Fleet.init(tmp_path / "other-fleet", PASSPHRASE, now=NOW)


# Every report store backend (SQLite, PostgreSQL): see tests/fleet/stores.py.
from tests.fleet.stores import make_store, pg_server, store_backend, store_url  # noqa: E402, F401
