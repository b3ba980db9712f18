import json
from pathlib import Path

from click.testing import CliRunner

from tinyward.cli.main import cli


def test_device_init_and_status(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["device", "init", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    status = runner.invoke(cli, ["device", "status", str(tmp_path / "d"), "--json"])
    data = json.loads(status.output)
    assert data["state"] == "initialised" and len(data["device_id"]) == 64
    assert data["hardware_backed"] is False


def test_device_init_twice_is_refused_with_reason(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["device", "init", str(tmp_path / "d")])
    result = runner.invoke(cli, ["device", "init", str(tmp_path / "d")])
    assert result.exit_code != 0
    assert "already holds a device" in result.output


def test_status_of_non_device_is_clear(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["device", "status", str(tmp_path)])
    assert result.exit_code != 0 and "not a tinyward device" in result.output


def test_status_table_reads_as_words_not_python_reprs(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["device", "init", str(tmp_path / "d")])
    result = runner.invoke(cli, ["device", "status", str(tmp_path / "d")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[" not in result.output and "'" not in result.output  # no list repr
    assert "False" not in result.output and "True" not in result.output
    assert "attestation, report, tls" in result.output or "attestation, tls" in result.output
