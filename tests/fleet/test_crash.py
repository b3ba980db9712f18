"""The server killed with SIGKILL mid-stream: nothing acknowledged is lost, nothing stored twice.

Devices resend whatever was not acknowledged (as the link's store-and-forward queue does);
the seq check and "ack after commit" must make that exactly-once in the database. Run on
both stores: ``fleet serve --db sqlite:///…`` and ``--db postgresql://…`` end to end.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from tests.fleet.stores import new_url, sql
from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import open_store
from tinyward.lab.fleetproc import server_environment
from tinyward.lab.simdevice import SimulatedDevice

PASSPHRASE = "crash test passphrase"
DEVICES, REPORTS, BATCH = 3, 40, 4
BOUND = 120.0  # seconds for the whole test, never more


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(fleet: Fleet, db: str, port: int) -> subprocess.Popen[str]:
    env = server_environment(None)  # the server key is in clear (0600)
    process = subprocess.Popen(
        [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet.directory), "--port",
         str(port), "--admin-port", "0", "--db", db], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=env)
    assert process.stdout is not None
    assert re.search(r"listening on", process.stdout.readline())
    return process


@pytest.mark.slow
def test_sigkill_twice_every_acked_report_stored_exactly_once(
        tmp_path: Path, store_backend: str, request: pytest.FixtureRequest) -> None:
    server_of_tests: Any = (request.getfixturevalue("pg_server")
                            if store_backend == "postgresql" else None)
    db = new_url(store_backend, tmp_path, server_of_tests)
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE.encode())
    devices = [SimulatedDevice.enrolled(fleet, PASSPHRASE.encode()) for _ in range(DEVICES)]
    now = int(time.time())
    queues = {d.device_id: [d.report(timestamp=now) for _ in range(REPORTS)] for d in devices}
    next_seq = {d.device_id: 1 for d in devices}  # lowest seq not yet acknowledged
    acked: dict[str, set[int]] = {d.device_id: set() for d in devices}
    contexts = {d.device_id: d.client_context(tmp_path / "tls") for d in devices}
    port = _free_port()
    server = [_serve(fleet, db, port)]
    progress = {"sent": 0, "kills": 0}
    deadline = time.monotonic() + BOUND

    def killer() -> None:
        # From another thread, so that the kill lands while requests are in flight
        # (committed but not yet acknowledged is the case that matters).
        for kill in (1, 2):
            while progress["sent"] < kill * 8 and time.monotonic() < deadline:
                time.sleep(0.005)
            server[0].send_signal(signal.SIGKILL)
            server[0].wait(30)
            progress["kills"] = kill
            time.sleep(0.2)  # down for a moment: devices keep their reports and retry
            server[0] = _serve(fleet, db, port)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        while any(next_seq[d] <= REPORTS for d in next_seq):
            assert time.monotonic() < deadline, "the devices could not deliver in time"
            for device_id, queue in queues.items():
                first = next_seq[device_id]
                if first > REPORTS:
                    continue
                batch = queue[first - 1:first - 1 + BATCH]
                try:
                    connection = http.client.HTTPSConnection(
                        "127.0.0.1", port, context=contexts[device_id], timeout=10)
                    connection.request("POST", "/v1/reports/batch", body=cbor2.dumps(batch),
                                       headers={"Content-Type": "application/cbor"})
                    answer = json.loads(connection.getresponse().read())
                    connection.close()
                except (OSError, http.client.HTTPException):
                    time.sleep(0.1)  # server down: keep the reports, retry later
                    continue
                stored = answer["stored_seq"]
                acked[device_id].update(range(first, stored + 1))
                next_seq[device_id] = stored + 1
                progress["sent"] += 1
    finally:
        thread.join(BOUND)
        server[0].terminate()
        server[0].wait(30)
    assert progress["kills"] == 2
    store = open_store(db)
    rows = [tuple(row) for row in sql(store, "SELECT device_id, seq FROM reports")]
    store.close()
    assert len(rows) == len(set(rows)) == DEVICES * REPORTS  # every report, exactly once
    for device_id, seqs in acked.items():
        assert seqs <= {seq for dev, seq in rows if dev == device_id}  # every ack is stored
