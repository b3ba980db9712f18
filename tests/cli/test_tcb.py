"""`tinyward tcb`: the trusted computing base, counted from the source and from what a
fresh interpreter really loads (tinyward.tcb)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import tinyward
from tinyward.cli.main import cli
from tinyward.tcb import count_lines, measure, package_of

TRUST = Path(tinyward.__file__).parent / "trust"
NOT_ON_A_DEVICE = ("fleet", "lab", "bench", "cli")


def test_count_lines_skips_blank_and_comment_lines() -> None:
    source = '"""Doc\n\nstring."""\n\n# a comment\nx = 1  # trailing\n\nif x:\n    pass\n'
    # The docstring's two non-blank lines, x = 1, if x:, pass.
    assert count_lines(source) == 5
    assert count_lines("# only\n\n   \n") == 0


def test_core_is_every_trust_module_and_its_lines() -> None:
    tcb = measure({})
    assert set(tcb.core) == {
        "tinyward.trust" if p.stem == "__init__" else f"tinyward.trust.{p.stem}"
        for p in TRUST.glob("*.py")}
    report = TRUST / "report.py"
    assert tcb.core["tinyward.trust.report"] == count_lines(report.read_text())
    assert tcb.core_lines == sum(tcb.core.values()) > 1000


def test_device_processes_load_no_fleet_tool_or_cli_code() -> None:
    tcb = measure()
    kinds = {p.kind: p for p in tcb.processes}
    assert set(kinds) == {"connected", "air-gapped", "sandbox wrapper"}
    for process in tcb.processes:
        wrong = [m for m in process.reachable if package_of(m) in NOT_ON_A_DEVICE]
        assert wrong == [], process.kind
        assert set(process.imported) <= set(process.reachable)
        assert "sqlite3" not in process.third_party  # the fleet's report store
    assert "tinyward.link.client" in kinds["connected"].imported
    assert "tinyward.readout.screen" in kinds["air-gapped"].imported
    # The air-gapped readout signs reports but never loads the link's TLS client.
    assert "tinyward.link.client" not in kinds["air-gapped"].imported
    assert "tinyward.app._landlock" in kinds["sandbox wrapper"].imported


def test_the_probe_sees_fleet_code_when_it_is_loaded() -> None:
    # The check above can fail: a process that imports the fleet store shows it.
    process = measure({"wrong": ("tinyward.fleet.store",)}).processes[0]
    assert "tinyward.fleet.store" in process.imported
    assert "sqlite3" in process.third_party
    assert process.imported["tinyward.fleet.store"] > 100


def test_tcb_command_prints_the_figures_and_json() -> None:
    runner = CliRunner()
    text = runner.invoke(cli, ["tcb", "--modules"])
    assert text.exit_code == 0, text.output
    assert "trusted core (tinyward.trust):" in text.output
    assert "connected process" in text.output and "air-gapped process" in text.output
    doc = json.loads(runner.invoke(cli, ["tcb", "--json"]).output)
    assert doc["core"]["lines"] == sum(doc["core"]["modules"].values())
    assert doc["processes"]["connected"]["imported"]["lines"] > doc["core"]["lines"] // 2
    assert "--json" in runner.invoke(cli, ["tcb", "--help"]).output


def test_the_trust_page_publishes_the_figure() -> None:
    page = (Path(tinyward.__file__).parents[2] / "docs" / "trust.md").read_text()
    assert "tinyward tcb" in page


def test_the_published_core_figure_in_docs_trust_is_current() -> None:
    # The figure is a promise (issue 11): a core that grew or shrank by more than 5 % since
    # docs/trust.md was last updated fails here; re-run `tinyward tcb` and update the table.
    docs = Path(tinyward.__file__).parents[2] / "docs" / "trust.md"
    row = next(line for line in docs.read_text(encoding="utf-8").splitlines()
               if line.startswith("| trusted core |"))
    published = int(row.split("|")[3].strip().replace(",", ""))
    actual = measure({}).core_lines
    assert abs(actual - published) <= 0.05 * actual, (published, actual)
