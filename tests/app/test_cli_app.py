"""`tinyward app inspect|run` and `tinyward bench sandbox` through click."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tinyward.cli.main import cli

GOOD = Path(__file__).parent / "good" / "sensor.toml"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, terminal_width=200)


@pytest.mark.slow
def test_inspect_prints_contract_protections_and_a_finite_bound():
    result = invoke("app", "inspect", str(GOOD))
    assert result.exit_code == 0, result.output
    for text in ("count", "0 .. 999", "normal, anomaly", "10.97 bits", "657.9 bits", "947,444 bits",
                 "seccomp", "landlock", "separate uid"):
        assert text in result.output, text


def test_inspect_adds_every_channel_the_app_controls_to_the_bound():
    result = invoke("app", "inspect", str(GOOD), "--no-probe", "--interval", "10")
    assert result.exit_code == 0, result.output
    # 657.9 (values) + 23.0 (which of 6 reports carry them) + 2.0 (faults, once a minute)
    for text in ("which of 6 reports/min carry them", "crash, stall, refused or none",
                 "leakage bound, all channels: 682.9 bits per minute"):
        assert text in result.output, text


def test_inspect_refuses_a_bad_manifest_with_line_and_reason(tmp_path):
    bad = tmp_path / "sensor.toml"
    bad.write_text(GOOD.read_text().replace('max = 999', 'max = -5'))
    result = invoke("app", "inspect", "--no-probe", str(bad))
    assert result.exit_code == 2
    assert f"{bad}:18: field 'count': min 0 > max -5" in result.output


@pytest.mark.slow
def test_run_simulated_frames():
    result = invoke("app", "run", str(GOOD), "--simulate", "3")
    assert result.exit_code == 0, result.output
    assert "3 frames, 3 results accepted" in result.output and "incidents: none" in result.output


def test_run_needs_exactly_one_source():
    result = CliRunner().invoke(cli, ["app", "run", str(GOOD)])
    assert result.exit_code != 0 and "exactly one" in result.output


@pytest.mark.slow
def test_run_csv_frames(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("distance_mm\n" + "\n".join(["2000"] * 40 + ["5"] * 5))
    result = invoke("app", "run", str(GOOD), "--frames", str(log))
    assert result.exit_code == 0, result.output
    assert "2 frames, 2 results accepted" in result.output  # 45 rows -> 2 whole frames


@pytest.mark.slow
def test_bench_sandbox_prints_both_paths():
    result = invoke("bench", "sandbox", "--frames", "200")
    assert result.exit_code == 0, result.output
    assert "in-process call" in result.output and "through the sandbox" in result.output
    assert "added latency at p50" in result.output
