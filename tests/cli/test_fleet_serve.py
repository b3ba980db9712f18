"""`tinyward fleet admin-token` and `tinyward fleet serve` as a user runs them."""

from __future__ import annotations

import http.client
import json
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinyward.cli.main import cli
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import server_environment

PASSPHRASE = "cli test passphrase"
SERVER_PASSPHRASE = b"the server's own passphrase"


def test_admin_token_prints_token_and_stores_only_its_hash(tmp_path: Path) -> None:
    Fleet.init(tmp_path / "fleet", PASSPHRASE.encode())
    result = CliRunner().invoke(cli, ["fleet", "admin-token", str(tmp_path / "fleet")])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    stored = (tmp_path / "fleet" / "admin-token.sha256").read_text()
    assert len(token) >= 40 and token not in stored
    assert (tmp_path / "fleet" / "admin-token.sha256").stat().st_mode & 0o077 == 0


def test_admin_token_refuses_a_folder_that_is_not_a_fleet(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["fleet", "admin-token", str(tmp_path)])
    assert result.exit_code != 0 and "not a tinyward fleet" in result.output


def test_serve_refuses_wrong_passphrase(tmp_path: Path) -> None:
    Fleet.init(tmp_path / "fleet", PASSPHRASE.encode(), server_passphrase=SERVER_PASSPHRASE)
    result = CliRunner().invoke(cli, ["fleet", "serve", str(tmp_path / "fleet"), "--port", "0"],
                                env={"TINYWARD_SERVER_PASSPHRASE": "wrong passphrase"})
    assert result.exit_code != 0 and "does not open" in result.output


def test_serve_refuses_bad_db_url(tmp_path: Path) -> None:
    Fleet.init(tmp_path / "fleet", PASSPHRASE.encode())
    result = CliRunner().invoke(cli, ["fleet", "serve", str(tmp_path / "fleet"), "--port", "0",
                                      "--db", "mysql://db/x"])
    assert result.exit_code != 0 and "sqlite:///" in result.output
    # PostgreSQL that is not there: one clear line, before anything listens.
    result = CliRunner().invoke(cli, ["fleet", "serve", str(tmp_path / "fleet"), "--port", "0",
                                      "--db", "postgresql://u@/x?host=/nonexistent-pg-dir"])
    assert result.exit_code != 0 and "error: PostgreSQL at" in result.output


def _serve(fleet: Fleet, workers: int) -> tuple[subprocess.Popen[str], int]:
    """`tinyward fleet serve` on a free port; returns once it has announced the port."""
    env = server_environment(None)  # the server key is in clear (0600)
    process = subprocess.Popen(
        [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet.directory), "--port", "0",
         "--admin-port", "0", "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    # The admin listener (no client certificate needed for /v1/health there).
    match = re.search(r"admin: https://127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        process.wait(30)
        raise AssertionError(f"the server did not announce its port: {line!r}")
    return process, int(match.group(1))


@pytest.mark.slow
def test_serve_with_two_workers_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE.encode())
    process, port = _serve(fleet, workers=2)
    try:
        context = ssl.create_default_context(cafile=str(fleet.root_ca_path))
        for _ in range(4):  # several connections, dealt round-robin over the workers
            connection = http.client.HTTPSConnection("127.0.0.1", port,
                                                     context=context, timeout=20)
            connection.request("GET", "/v1/health")
            assert json.loads(connection.getresponse().read()) == {"status": "ok"}
            connection.close()
        assert (fleet.directory / "reports.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0


def test_workers_stop_when_the_accepting_process_is_killed(tmp_path: Path) -> None:
    # SIGKILL gives the first process no chance to stop its workers; they must notice the
    # dealer is gone (its channel closes) and exit, not live on holding the database.
    import psutil

    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE.encode())
    process, _ = _serve(fleet, workers=3)
    workers = psutil.Process(process.pid).children()
    assert len(workers) == 2
    process.kill()
    process.wait(30)
    _, alive = psutil.wait_procs(workers, timeout=20)
    for orphan in alive:  # leave nothing behind even if the check fails
        orphan.kill()
    assert not alive, f"{len(alive)} workers outlived the killed dealer"
