"""`tinyward bench token` runs and prints each figure next to its baseline."""

from __future__ import annotations

from click.testing import CliRunner

from tinyward.cli.main import cli


def test_bench_token_prints_figures_with_baselines() -> None:
    result = CliRunner().invoke(cli, ["bench", "token", "--count", "10"])
    assert result.exit_code == 0, result.output
    assert "baseline cose.sign1" in result.output
    assert "baseline cose decode+verify" in result.output
    assert result.output.count("ratio") == 2
