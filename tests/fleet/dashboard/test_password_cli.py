"""`tinyward fleet dashboard-password` as an operator runs it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tinyward.cli.main import cli
from tinyward.fleet.dashboard.auth import LoginGate, password_matches
from tinyward.fleet.pki import Fleet

PASSPHRASE = b"cli test passphrase"
PASSWORD = "a long dashboard password"


def test_dashboard_password_asks_twice_and_keeps_only_a_hash(tmp_path: Path) -> None:
    Fleet.init(tmp_path / "fleet", PASSPHRASE)
    result = CliRunner().invoke(cli, ["fleet", "dashboard-password", str(tmp_path / "fleet")],
                                input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    stored = LoginGate(tmp_path / "fleet").stored()
    assert stored is not None and PASSWORD not in stored and password_matches(stored, PASSWORD)


def test_dashboard_password_from_the_environment(tmp_path: Path) -> None:
    Fleet.init(tmp_path / "fleet", PASSPHRASE)
    result = CliRunner().invoke(cli, ["fleet", "dashboard-password", str(tmp_path / "fleet")],
                                env={"TINYWARD_DASHBOARD_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    stored = LoginGate(tmp_path / "fleet").stored()
    assert stored is not None and password_matches(stored, PASSWORD)


def test_dashboard_password_refuses_a_short_one_in_one_line(tmp_path: Path) -> None:
    Fleet.init(tmp_path / "fleet", PASSPHRASE)
    result = CliRunner().invoke(cli, ["fleet", "dashboard-password", str(tmp_path / "fleet")],
                                env={"TINYWARD_DASHBOARD_PASSWORD": "short"})
    assert result.exit_code != 0
    assert result.output.strip().startswith("error:") and "12" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert LoginGate(tmp_path / "fleet").stored() is None


def test_dashboard_password_refuses_a_folder_that_is_not_a_fleet(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["fleet", "dashboard-password", str(tmp_path)],
                                env={"TINYWARD_DASHBOARD_PASSWORD": PASSWORD})
    assert result.exit_code != 0 and "not a tinyward fleet" in result.output
    assert not (tmp_path / "dashboard").exists()
