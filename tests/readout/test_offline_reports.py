"""Offline (QR) reports: the connected path's clock window (issue 12, item 9), and
sequence numbers unique across concurrent readout sessions (item 7).

Before, `tinyward report verify` accepted a report dated ten years ahead or in 1970 while
the fleet server refused the same report over TLS. Now both use
:func:`tinyward.fleet.ingest.clock_skew`; reading an old report takes an explicit option.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinyward.cli.main import cli
from tinyward.fleet.offline import ReportClockSkew, verify_offline
from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import ReportStore, open_store
from tinyward.readout.offline import make_offline_report, to_text
from tinyward.readout.state import DisplayState
from tinyward.trust.device import Device

DAY = 24 * 3600
TEN_YEARS = 3653 * DAY


def report_at(device: Device, timestamp: float) -> bytes:
    return make_offline_report(device, DisplayState(results=({"count": 3},)), now=timestamp)


def store_of(fleet: Fleet) -> ReportStore:
    return open_store(f"sqlite:///{fleet.directory / 'reports.db'}")


@pytest.mark.parametrize("offset", [TEN_YEARS, 3600], ids=["ten-years-ahead", "an-hour-ahead"])
def test_offline_report_from_the_future_refused(fleet_and_device, offset: int) -> None:
    fleet, device = fleet_and_device
    store = store_of(fleet)
    with pytest.raises(ReportClockSkew, match="in the future"):
        verify_offline(fleet, report_at(device, time.time() + offset), store)
    with pytest.raises(ReportClockSkew, match="in the future"):  # --allow-old is for the past only
        verify_offline(fleet, report_at(device, time.time() + offset), store, allow_old=True)
    assert store.last_seq(device.device_id) == 0, "a refused report was stored"


@pytest.mark.parametrize("timestamp", [0, time.time() - 40 * DAY], ids=["1970", "40-days-old"])
def test_offline_report_too_old_refused_unless_allowed(fleet_and_device, timestamp: float) -> None:
    fleet, device = fleet_and_device
    store = store_of(fleet)
    data = report_at(device, timestamp)
    with pytest.raises(ReportClockSkew, match="old, over the"):
        verify_offline(fleet, data, store)
    assert store.last_seq(device.device_id) == 0
    assert verify_offline(fleet, data, store, allow_old=True).timestamp == int(timestamp)


def test_offline_report_in_the_window_verifies(fleet_and_device) -> None:
    fleet, device = fleet_and_device
    assert verify_offline(fleet, report_at(device, time.time() - 3 * DAY), store_of(fleet)).seq == 1


def test_report_verify_cli_window_and_options(fleet_and_device, tmp_path: Path) -> None:
    fleet, device = fleet_and_device
    runner = CliRunner()

    def verify(text: str, *options: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["report", "verify", text, "--fleet", str(fleet.directory),
                                     *options])
        return result.exit_code, result.output

    ahead = time.time() + 3600
    future = to_text(report_at(device, ahead))
    code, output = verify(future)
    assert code != 0 and "in the future" in output and "--at TIME" in output
    # Checked as at a time after it was made, the same report is in the window.
    at = datetime.fromtimestamp(ahead + 1, UTC).isoformat()
    code, output = verify(future, "--at", at)
    assert code == 0, output
    old = to_text(report_at(device, 0))
    code, output = verify(old)
    assert code != 0 and "--allow-old" in output
    code, output = verify(old, "--allow-old")
    assert code == 0 and '"time": 0' in output, output
    code, output = verify(old, "--at", "yesterday")
    assert code == 2 and "ISO 8601" in output


def _report_maker(index: int, barrier: object, directory: Path) -> list[int]:
    from tinyward.readout.offline import OFFLINE_REPORT_SIZE
    from tinyward.trust.report import verify_report

    device = Device.open(directory)
    key = device.signer("report").public_key()
    barrier.wait()  # type: ignore[attr-defined]
    return [verify_report(report_at(device, time.time()), key, size=OFFLINE_REPORT_SIZE).seq
            for _ in range(10)]


def test_concurrent_readout_sessions_never_share_a_sequence_number(fleet_and_device) -> None:
    """Four readout sessions making QR reports at once: 40 reports, 40 numbers."""
    from tests.trust.test_concurrency import run_together

    _, device = fleet_and_device
    numbers = [seq for seqs in run_together(4, _report_maker, device.directory) for seq in seqs]
    assert sorted(numbers) == list(range(1, 41))
