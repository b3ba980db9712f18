"""Several fleet server nodes over one database (issue 17): what must hold when devices
move between nodes, and the real HAProxy in front (deploy/haproxy/haproxy.cfg)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tinyward.fleet.store import SQLiteStore
from tinyward.trust.report import Report

A = "aa" * 32


def _r(device: str, seq: int) -> tuple[Report, bytes]:
    return Report(device, seq, 1000 + seq), b"signed-%d" % seq


def test_a_node_that_opens_and_closes_the_database_loses_no_acked_report_of_another(
        tmp_path: Path) -> None:
    """Node 1 holds the database (its ingest connection and its admin reader); node 2 starts
    (its check opens and closes a connection). SQLite deletes the WAL when the *last*
    connection closes, and judges "last" by POSIX locks, which a process loses on every
    descriptor of the file it closes: node 1's reader used to open and close the database
    file itself (to make it 0600), so node 2's close deleted the WAL under node 1, whose
    later commits (acknowledged) went to a deleted file and were lost to everyone else."""
    path = tmp_path / "reports.db"
    node1 = SQLiteStore(path)
    reader = node1.reader()
    subprocess.run([sys.executable, "-c", "import sys\nfrom tinyward.fleet.store import "
                    "SQLiteStore\nSQLiteStore(sys.argv[1]).close()", str(path)], check=True)
    assert node1.append(A, [_r(A, 1)], received_at=5) == 1  # acknowledged
    fresh = sqlite3.connect(path)  # another node, or the operator
    assert fresh.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 1
    fresh.close()
    reader.close()
    node1.close()
