"""The real fleet server (:mod:`tinyward.fleet.server` on SQLite) for link tests.

Started the way tests/fleet/serverkit.py starts it, so the link is tested against the one
report endpoint a fleet runs, not a copy of it. What the server stored is read back from
its database: ``stored`` (sequence numbers in arrival order) and ``reports`` (verified
again with the device's report key).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Self

from tinyward.fleet.delivery import ChunkServer
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.pki import Fleet
from tinyward.fleet.runner import ServerThread, server_ssl_context
from tinyward.fleet.server import FleetServer, ServerConfig
from tinyward.fleet.store import SQLiteStore
from tinyward.trust.report import Report, verify_report


class LiveFleetServer:
    """``with LiveFleetServer(fleet) as server:`` a running fleet server.

    ``port`` lets a test bring the server up where a device already tries to reach it;
    the database lives next to the fleet folder, so a second server on the same fleet sees
    what the first one stored.
    """

    def __init__(self, fleet: Fleet, port: int = 0, delivery: ChunkServer | None = None) -> None:
        """``delivery``: the update chunk server (default: the fleet's own repository)."""
        self.fleet = fleet
        self.delivery = delivery
        self._port = port
        self.db_path = Path(fleet.directory).parent / "link-tests-reports.db"
        self._store: SQLiteStore | None = None
        self._thread: ServerThread | None = None
        self.port = port
        self.url = f"https://127.0.0.1:{port}"

    def __enter__(self) -> Self:
        self._store = SQLiteStore(self.db_path)
        directory = FleetDirectory(self.fleet)
        # The devices of link tests report every 0.1 s, under the 1 s a fleet lets a device
        # declare (tinyward.fleet.pki.MIN_REPORT_INTERVAL): one explicit rate for all of
        # them, twice that schedule, instead of each one's declared 10 s.
        config = ServerConfig(rate_per_second=2 / 0.1)
        self._thread = ServerThread(FleetServer(directory, self._store, config,
                                                delivery=self.delivery),
                                    server_ssl_context(self.fleet),
                                    port=self._port)
        self.port = self._thread.port
        self.url = f"https://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.stop()
        if self._store is not None:
            self._store.close()

    def _rows(self) -> list[tuple[str, int]]:
        # Its own read-only connection: valid after the server has stopped, too.
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT device_id, seq FROM reports ORDER BY rowid").fetchall()
        return [(str(device), int(seq)) for device, seq in rows]

    @property
    def stored(self) -> dict[str, list[int]]:
        """Sequence numbers the server stored, per device, in the order they arrived."""
        out: dict[str, list[int]] = {}
        for device_id, seq in self._rows():
            out.setdefault(device_id, []).append(seq)
        return out

    @property
    def reports(self) -> dict[str, list[Report]]:
        """The stored reports, per device in arrival order, each verified again."""
        store = SQLiteStore(self.db_path)
        directory = FleetDirectory(self.fleet)
        out: dict[str, list[Report]] = {}
        try:
            for device_id, seq in self._rows():
                signed = store.signed_report(device_id, seq)
                key = directory.report_key(device_id)
                assert signed is not None and key is not None
                out.setdefault(device_id, []).append(
                    verify_report(signed, key, size=len(signed)))
        finally:
            store.close()
        return out
