from pathlib import Path

from click.testing import CliRunner

from tinyward.cli.main import cli


def test_demo_runs_and_every_attack_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--devices", "2", "--keep", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "ACCEPTED" not in result.output
    assert result.output.count("✔ refused") >= 4
    assert (tmp_path / "d" / "fleet" / "fleet.json").exists()


def test_demo_refuses_a_non_empty_keep_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    result = CliRunner().invoke(cli, ["demo", "--keep", str(tmp_path)])
    assert result.exit_code != 0 and "not empty" in result.output
