"""Declared report schedules through the CLI: `fleet init/enroll --report-interval`,
`fleet set-schedule`, `device provision --report-interval`, and where they are shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.fleet.helpers import CLI_SECRETS, request_pem
from tinyward.cli.main import cli
from tinyward.fleet.bundle import DeviceBundle
from tinyward.fleet.pki import Fleet
from tinyward.trust.device import Device


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def _one_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    result = _run("fleet", "init", str(tmp_path / "fleet"), "--report-interval", "30",
                  env=CLI_SECRETS)
    assert result.exit_code == 0, result.output
    assert "default report interval: 30 s" in result.output
    return tmp_path / "fleet"


def _enrol(fleet_dir: Path, tmp_path: Path, *extra: str) -> tuple[Result, str]:
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(request_pem())
    out = tmp_path / "b.json"
    result = _run("fleet", "enroll", str(fleet_dir), str(request), "-o", str(out), *extra,
                  env=CLI_SECRETS)
    device_id = DeviceBundle.from_json(out.read_bytes()).device_id if out.exists() else ""
    return result, device_id


def test_enroll_records_the_schedule_and_listings_show_it(fleet_dir: Path,
                                                          tmp_path: Path) -> None:
    result, declared = _enrol(fleet_dir, tmp_path, "--report-interval", "60")
    assert result.exit_code == 0 and "reporting every 60 s" in result.output
    (tmp_path / "b.json").unlink()
    result, default = _enrol(fleet_dir, tmp_path)
    assert result.exit_code == 0 and "reporting every 30 s" in result.output  # the fleet's
    fleet = Fleet.open(fleet_dir)
    assert fleet.device(declared).report_interval == 60.0
    assert fleet.device(default).report_interval == 30.0
    table = _run("fleet", "devices", str(fleet_dir)).output
    rows = {line.split()[1]: line for line in table.splitlines() if "│" in line}
    assert "60 s" in rows[declared] and "30 s" in rows[default]
    assert "report every:  30 s" in _run("fleet", "show", str(fleet_dir)).output


def test_out_of_bounds_is_one_clear_error_before_anything_is_asked(fleet_dir: Path,
                                                                   tmp_path: Path) -> None:
    # No CA passphrase in the environment: the schedule is refused before it is asked for.
    result, _ = _enrol(fleet_dir, tmp_path, "--report-interval", "0.1")
    _one_error(result, "1 to 86400 seconds")
    assert Fleet.open(fleet_dir).devices() == []
    _one_error(_run("fleet", "init", str(tmp_path / "g"), "--report-interval", "100000"),
               "1 to 86400 seconds")
    assert not (tmp_path / "g").exists()


def test_set_schedule(fleet_dir: Path, tmp_path: Path) -> None:
    _, device_id = _enrol(fleet_dir, tmp_path)
    result = _run("fleet", "set-schedule", str(fleet_dir), device_id, "--report-interval", "5")
    assert result.exit_code == 0, result.output
    assert "now reports every 5 s" in result.output and "--interval" in result.output
    assert Fleet.open(fleet_dir).device(device_id).report_interval == 5.0
    _one_error(_run("fleet", "set-schedule", str(fleet_dir), device_id, "--report-interval",
                    "0"), "1 to 86400")
    _one_error(_run("fleet", "set-schedule", str(fleet_dir), "0" * 64, "--report-interval",
                    "5"), "not enrolled")
    assert Fleet.open(fleet_dir).device(device_id).report_interval == 5.0


def test_provision_declares_the_schedule(fleet_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "dev"
    result = _run("device", "provision", str(target), "--fleet", str(fleet_dir), "--readout",
                  "none", "--report-interval", "120", env=CLI_SECRETS)
    assert result.exit_code == 0, result.output
    assert "one report every 120 s" in " ".join(result.output.split())  # rich wraps lines
    device_id = Device.open(target).device_id
    assert Fleet.open(fleet_dir).device(device_id).report_interval == 120.0
    bad = _run("device", "provision", str(tmp_path / "d2"), "--fleet", str(fleet_dir),
               "--readout", "none", "--report-interval", "0.5", env=CLI_SECRETS)
    _one_error(bad, "1 to 86400")
    assert not (tmp_path / "d2" / "device.json").exists()


def test_serve_falls_back_to_the_fleets_default_for_devices_without_a_schedule(
        fleet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tinyward.fleet.runner as runner

    seen = []
    monkeypatch.setattr(runner, "serve_forever", lambda *args, **kw: seen.append(args[5]))
    monkeypatch.delenv("TINYWARD_CA_PASSPHRASE", raising=False)
    monkeypatch.delenv("TINYWARD_UPDATE_PASSPHRASE", raising=False)
    env = {"TINYWARD_SERVER_PASSPHRASE": CLI_SECRETS["TINYWARD_SERVER_PASSPHRASE"]}
    for extra, fallback in (((), 30.0), (("--report-interval", "5"), 5.0)):
        result = CliRunner().invoke(cli, ["fleet", "serve", str(fleet_dir), *extra], env=env)
        assert result.exit_code == 0, result.output
        config = seen.pop()
        assert config.report_interval == fallback  # the fleet's default (init said 30 s)
        assert config.rate_for(None) == 2 / fallback and config.rate_for(60.0) == 2 / 60
        assert config.device_burst == 306


def test_serve_commit_window_is_given_in_milliseconds(
        fleet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--commit-window (ms) reaches the server's group commit (seconds); 5 ms by default."""
    import tinyward.fleet.runner as runner

    seen = []
    monkeypatch.setattr(runner, "serve_forever", lambda *args, **kw: seen.append(args[5]))
    monkeypatch.delenv("TINYWARD_CA_PASSPHRASE", raising=False)
    monkeypatch.delenv("TINYWARD_UPDATE_PASSPHRASE", raising=False)
    env = {"TINYWARD_SERVER_PASSPHRASE": CLI_SECRETS["TINYWARD_SERVER_PASSPHRASE"]}
    for extra, window in (((), 0.005), (("--commit-window", "20"), 0.020),
                          (("--commit-window", "0"), 0.0)):
        result = CliRunner().invoke(cli, ["fleet", "serve", str(fleet_dir), *extra], env=env)
        assert result.exit_code == 0, result.output
        assert seen.pop().commit_window == pytest.approx(window)
    refused = CliRunner().invoke(cli, ["fleet", "serve", str(fleet_dir), "--commit-window",
                                       "-1"], env=env)
    assert refused.exit_code != 0 and not seen
