"""`tinyward fleet serve` keeps the update repository's online roles fresh: it re-signs
snapshot and timestamp at start and on a timer (``--update-refresh``), so they never
expire under a running server; a failing refresh is one log line and the server serves on."""

from __future__ import annotations

import http.client
import json
import re
import signal
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.fleet.helpers import PASSPHRASE, SERVER_PASSPHRASE
from tinyward.fleet.pki import Fleet
from tinyward.fleet.update_repo import UpdateRepository
from tinyward.lab.fleetproc import server_environment

ROOT_SECRETS = [b"first root holder: blue kettle 4417", b"second root holder: quiet lantern 92",
                b"third root holder: amber orchard 305"]
TARGETS = b"targets holder: copper meadow 81 again"


def _serve(fleet: Fleet, log: Path, every: float) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet.directory), "--port",
         "0", "--admin-port", "0", "--update-refresh", str(every)],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        env=server_environment(SERVER_PASSPHRASE))
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"admin: https://127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        process.wait(30)
        raise AssertionError(f"the server did not start: {line!r} {log.read_text()}")
    return process, int(match.group(1))


def _health(fleet: Fleet, port: int) -> object:
    context = ssl.create_default_context(cafile=str(fleet.root_ca_path))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    connection.request("GET", "/v1/health")
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return answer


def _timestamp(repo: UpdateRepository) -> dict[str, object]:
    signed: dict[str, object] = json.loads(
        (repo.metadata_dir / "timestamp.json").read_bytes())["signed"]
    return signed


def _init(fleet: Fleet, now: datetime) -> UpdateRepository:
    return UpdateRepository.init(fleet.directory, root_secrets=ROOT_SECRETS,
                                 targets_secrets=[TARGETS], server_secret=SERVER_PASSPHRASE,
                                 root_threshold=2, now=now)


def _wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_a_running_server_re_signs_a_timestamp_about_to_expire(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, server_passphrase=SERVER_PASSPHRASE)
    log = tmp_path / "server.log"
    process, port = _serve(fleet, log, every=0.5)
    try:
        # The repository appears while the server runs (checked at every tick), signed
        # 23 h 50 min ago: its timestamp (1 day) has 10 minutes left.
        now = datetime.now(UTC).replace(microsecond=0)
        repo = _init(fleet, now - timedelta(hours=23, minutes=50))
        before = _timestamp(repo)
        assert _wait(lambda: _timestamp(repo)["version"] != before["version"], 60), \
            log.read_text()
        after = _timestamp(repo)
        expires = datetime.fromisoformat(str(after["expires"]).replace("Z", "+00:00"))
        assert expires > now + timedelta(hours=23)
        assert "re-signed" in log.read_text()
        assert _health(fleet, port) == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0


def test_a_failing_refresh_is_one_log_line_and_the_server_serves_on(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, server_passphrase=SERVER_PASSPHRASE)
    # A root that expired (offline holders must re-sign it): the server cannot refresh.
    _init(fleet, datetime.now(UTC).replace(microsecond=0) - timedelta(days=400))
    log = tmp_path / "server.log"
    process, port = _serve(fleet, log, every=0.3)
    try:
        assert _wait(lambda: log.read_text().count("refresh failed") >= 2, 60), log.read_text()
        assert _health(fleet, port) == {"status": "ok"}
        failures = [line for line in log.read_text().splitlines() if "refresh failed" in line]
        assert all("MetadataExpired" in line for line in failures)
        assert "Traceback" not in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0
