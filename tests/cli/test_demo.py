from pathlib import Path

import pytest
from click.testing import CliRunner

from tinyward.cli.main import cli


@pytest.mark.slow
def test_demo_runs_and_every_attack_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--devices", "2", "--duration", "12",
                                      "--interval", "0.5", "--keep", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "NOT REFUSED" not in result.output and "NOT VERIFIED" not in result.output
    assert "attacks refused: 11 of 11" in result.output
    assert "PSA token verifies: yes" in result.output
    assert "kept reports reach the fleet: yes" in result.output
    assert (tmp_path / "d" / "fleet" / "fleet.json").exists()
    assert (tmp_path / "d" / "fleet" / "reports.db").exists()


def test_demo_refuses_a_non_empty_keep_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    result = CliRunner().invoke(cli, ["demo", "--keep", str(tmp_path)])
    assert result.exit_code != 0 and "not empty" in result.output
