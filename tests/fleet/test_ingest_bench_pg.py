"""`tinyward bench ingest --db postgresql://…` prints PostgreSQL's figures next to SQLite's
(tiny sizes: this checks it works and counts, not its speed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fleet.stores import new_url
from tinyward.cli.main import cli
from tinyward.fleet.store import open_store


@pytest.mark.slow
def test_bench_ingest_runs_on_sqlite_and_postgresql_in_one_run(
        tmp_path: Path, pg_server: Any) -> None:
    url = new_url("postgresql", tmp_path, pg_server)
    result = CliRunner().invoke(cli, ["bench", "ingest", "--devices", "3", "--reports", "7",
                                      "--workers", "1", "--db", url])
    assert result.exit_code == 0, result.output
    assert result.output.index("--- store: SQLite") < result.output.index(
        "--- store: PostgreSQL")
    assert result.output.count("stored (committed, counted in the database): 7 in") == 2
    assert "stores side by side: SQLite " in result.output
    if getattr(pg_server, "cluster", None) is not None:  # ours, on this machine: counted
        assert result.output.count("+ PostgreSQL's own processes") == 1
    store = open_store(url)
    try:
        assert store.fleet_status().reports == 7  # the PostgreSQL run's own rows
    finally:
        store.close()


def test_bench_ingest_refuses_a_bad_db_url_before_running() -> None:
    result = CliRunner().invoke(cli, ["bench", "ingest", "--devices", "1", "--reports", "1",
                                      "--db", "postgresql://host-without-db"])
    assert result.exit_code != 0 and "name the database" in result.output
    assert "--- store" not in result.output
