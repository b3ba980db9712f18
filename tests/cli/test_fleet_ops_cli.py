"""`tinyward fleet reports|incidents|devices`: tables and --json from the real store."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tinyward.cli.fleet_ops import age, parse_since
from tinyward.cli.main import cli
from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import SQLiteStore
from tinyward.lab.simdevice import SimulatedDevice
from tinyward.trust.report import Report, UpdateStatus

from ..fleet.helpers import PASSPHRASE


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    """A fleet of four devices: one reporting with incidents, one quiet, one never seen,
    one revoked."""
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    names = ("busy", "quiet", "never", "revoked")
    devices = {n: SimulatedDevice.enrolled(fleet, PASSPHRASE, 10.0) for n in names}
    now = int(time.time())
    store = SQLiteStore(fleet.directory / "reports.db")
    busy, quiet = devices["busy"].device_id, devices["quiet"].device_id
    store.append(busy, [(Report(busy, 1, now - 20, incidents={"net.anomaly": 2}), b"x")],
                 received_at=now - 20)
    store.append(busy, [(Report(busy, 2, now - 5, update=UpdateStatus(
        "installed", {"app": "1.2.0"})), b"x")], received_at=now - 5)
    store.append(quiet, [(Report(quiet, 1, now - 3600), b"x")], received_at=now - 3600)
    store.add_incident(quiet, "quiet", now - 3500, "no report for 100 s (schedule 10 s)")
    revoked = devices["revoked"].device_id
    store.append(revoked, [(Report(revoked, 1, now), b"x")], received_at=now)
    store.close()
    fleet.revoke(revoked)
    (tmp_path / "ids.json").write_text(json.dumps({n: d.device_id for n, d in devices.items()}))
    return fleet.directory


def _ids(fleet_dir: Path) -> dict[str, str]:
    return dict(json.loads((fleet_dir.parent / "ids.json").read_text()))


def test_devices_json_states_last_seen_versions_incidents(fleet_dir: Path) -> None:
    ids = _ids(fleet_dir)
    result = _run("fleet", "devices", str(fleet_dir), "--json")
    assert result.exit_code == 0, result.output
    rows = {row["device_id"]: row for row in json.loads(result.output)["devices"]}
    assert {rows[ids[n]]["state"] for n in ids} == {"ok", "quiet", "never", "revoked"}
    assert rows[ids["busy"]]["state"] == "ok"
    assert rows[ids["busy"]]["update"]["versions"] == {"app": "1.2.0"}
    assert rows[ids["busy"]]["incidents"] == {"net.anomaly": 2}
    assert rows[ids["quiet"]]["state"] == "quiet"
    assert rows[ids["never"]]["last_received_at"] is None


def test_devices_table_and_state_filter(fleet_dir: Path) -> None:
    ids = _ids(fleet_dir)
    output = _run("fleet", "devices", str(fleet_dir), "--state", "quiet").output
    assert ids["quiet"] in output and ids["busy"] not in output
    table = _run("fleet", "devices", str(fleet_dir)).output
    row = next(line for line in table.splitlines() if ids["busy"] in line)
    cells = [cell.strip() for cell in row.split("│")]
    # the first seven columns as before, then state, last seen, incidents
    assert cells[6:9] == ["installed", "app 1.2.0", "ok"]
    assert re.fullmatch(r"\d+ s ago", cells[9]) and cells[10] == "net.anomaly×2"


def test_reports_newest_first_and_by_device(fleet_dir: Path) -> None:
    ids = _ids(fleet_dir)
    every = json.loads(_run("fleet", "reports", str(fleet_dir), "--json").output)["reports"]
    assert every[0]["device_id"] == ids["revoked"]  # received last
    assert len(every) == 4
    mine = json.loads(_run("fleet", "reports", str(fleet_dir), "--json", "--device",
                           ids["busy"][:10]).output)["reports"]
    assert [r["seq"] for r in mine] == [2, 1]
    recent = json.loads(_run("fleet", "reports", str(fleet_dir), "--json", "--since",
                             "10m").output)["reports"]
    assert ids["quiet"] not in {r["device_id"] for r in recent} and len(recent) == 3
    limited = json.loads(_run("fleet", "reports", str(fleet_dir), "--json", "--limit",
                              "1").output)["reports"]
    assert len(limited) == 1
    assert "4 reports" in _run("fleet", "reports", str(fleet_dir)).output


def test_incidents_by_kind_and_device(fleet_dir: Path) -> None:
    ids = _ids(fleet_dir)
    every = json.loads(_run("fleet", "incidents", str(fleet_dir), "--json").output)
    kinds = [(i["kind"], i["device_id"]) for i in every["incidents"]]
    assert kinds == [("quiet", ids["quiet"]), ("net.anomaly", ids["busy"])]  # last recorded first
    quiet = json.loads(_run("fleet", "incidents", str(fleet_dir), "--json", "--kind",
                            "quiet").output)["incidents"]
    assert len(quiet) == 1 and quiet[0]["seq"] is None
    reported = json.loads(_run("fleet", "incidents", str(fleet_dir), "--json", "--device",
                               ids["busy"]).output)["incidents"]
    assert reported[0]["seq"] == 1 and reported[0]["evidence"] == "report seq 1"
    table = _run("fleet", "incidents", str(fleet_dir)).output
    assert "no report for 100 s" in table and "2 incidents" in table


def test_no_database_yet_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    result = _run("fleet", "reports", str(fleet.directory), "--json")
    assert result.exit_code == 0 and json.loads(result.output) == {"reports": []}
    assert not (fleet.directory / "reports.db").exists()


@pytest.mark.parametrize("args, needle", [
    (("reports", "--device", "zz"), "no enrolled device"),
    (("incidents", "--since", "yesterday"), "--since"),
])
def test_bad_arguments_one_error_line(fleet_dir: Path, args: tuple[str, ...],
                                      needle: str) -> None:
    result = _run("fleet", args[0], str(fleet_dir), *args[1:])
    assert result.exit_code != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_since_and_age_formats() -> None:
    assert parse_since("90s", 1000.0) == 910.0
    assert parse_since("2h", 10_000.0) == 10_000.0 - 7200
    assert parse_since("1700000000", 0) == 1_700_000_000
    assert parse_since("2023-11-14T22:13:20Z", 0) == 1_700_000_000
    assert parse_since(None, 5) == 0
    assert age(None) == "never" and age(5) == "5 s ago" and age(3 * 3600) == "3 h ago"
