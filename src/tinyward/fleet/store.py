"""Where the fleet keeps reports: one :class:`ReportStore` interface, a SQLite backend.

The server acknowledges a report only after :meth:`ReportStore.append` has returned, and
``append`` returns only after the transaction is committed to stable storage, so "acked"
always means "on disk". ``append`` is also idempotent in sequence numbers: a report whose
``seq`` is not above the device's last stored one is skipped, inside the same transaction,
so two connections (or two server processes) racing for one device can never store a
report twice.

SQLite runs in WAL mode with ``synchronous=FULL`` (the WAL is fsynced on every commit).
The SQL is kept portable (``ON CONFLICT … DO UPDATE``, ``BIGINT``, multi-row ``VALUES``)
so that a PostgreSQL backend can implement the same interface later; the SQLite-only parts
(``json_group_object`` in a commit, ``zeroblob`` in the ``signed_reports`` view) are marked
where they are.

Every report's signed bytes are kept for audit, exactly, but without their zero padding:
reports are padded to one size so that the wire says nothing, and about three quarters of
a default 1,024-byte report is zeros. The row keeps the bytes with the first long run of
zeros cut out (``signed_packed``) and where it was (``pad_at``, ``pad_len``);
:meth:`SQLiteStore.signed_report` and the SQLite view ``signed_reports`` give the exact
signed bytes back. The database is about four times smaller, and each commit writes that
much less.

Databases are named by URL: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
(see :func:`open_store`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from tinyward.errors import BadInput
from tinyward.trust.replay import is_replay
from tinyward.trust.report import Report
from tinyward.update.meta import COMPONENTS as _COMPONENTS


class BadDatabaseUrl(BadInput):
    """The ``--db`` URL names no backend tinyward has, or no usable path."""


@dataclass(frozen=True)
class DeviceUpdate:
    """The update state and installed versions from the device's latest report that had
    them (the ``upd`` field; ``seq`` is that report's number)."""

    state: str
    versions: dict[str, str]
    why: str | None
    target: tuple[str, str] | None
    seq: int


@dataclass(frozen=True)
class DeviceStatus:
    """What the fleet knows about one device from its reports."""

    device_id: str
    last_seq: int
    reports: int
    last_report_time: int
    last_received_at: int
    health: str
    incidents: dict[str, int]
    update: DeviceUpdate | None = None


@dataclass(frozen=True)
class StoredReport:
    """One stored report as the operator's ``fleet reports`` shows it (its signed bytes:
    :meth:`SQLiteStore.signed_report`)."""

    device_id: str
    seq: int
    report_time: int
    received_at: int
    mode: str
    health: str
    results: list[Any]
    incidents: dict[str, int]


@dataclass(frozen=True)
class UpdateRecord:
    """One device's update facts for one target (what a rollout's tally needs).

    ``installed``: its reported version of the target's component (None: none);
    ``failed_at``: when the fleet received the device's latest ``failed`` or ``reverted``
    report naming this target, or naming none (None: never)."""

    device_id: str
    state: str
    installed: str | None
    failed_at: int | None


@dataclass(frozen=True)
class Incident:
    """One incident the fleet recorded for a device.

    - ``id``: increasing per store (newer incidents have larger IDs);
    - ``kind``: what was noticed (a device's own kind, e.g. ``net.anomaly``, as it reported
      it, or :data:`OTHER_KIND` beyond the device's cap; or one the fleet raised, e.g.
      ``quiet``);
    - ``count``: how many the report counted (1 for one the fleet raised);
    - ``at``: when the fleet received it (Unix seconds, fleet clock);
    - ``device_time``: the report's own timestamp (device clock), None if the fleet raised it;
    - ``seq``: the report that carried it (its signed bytes are the evidence: see
      :meth:`SQLiteStore.signed_report`), None if the fleet raised it;
    - ``evidence``: a short text for people ("report seq 12", "no report for 95 s").
    """

    id: int
    device_id: str
    kind: str
    count: int
    at: int
    device_time: int | None
    seq: int | None
    evidence: str


@dataclass(frozen=True)
class FleetStatus:
    """Totals over the whole fleet."""

    devices: int
    reports: int
    degraded_devices: int
    incidents: dict[str, int]


class ReportStore(Protocol):
    """The storage interface the fleet server uses (SQLite now, PostgreSQL later)."""

    def last_seq(self, device_id: str) -> int:
        """The highest stored sequence number of the device, 0 if none."""
        ...

    def append(self, device_id: str, reports: Sequence[tuple[Report, bytes]],
               received_at: int) -> int:
        """Store verified reports ``(report, signed bytes)`` of one device, in order.

        Reports whose ``seq`` is not above the stored one are skipped. Returns the highest
        sequence number durably stored for the device, after the commit.
        """
        ...

    def append_many(self, groups: Sequence[tuple[str, Sequence[tuple[Report, bytes]]]],
                    received_at: int) -> list[int]:
        """:meth:`append` for several devices in **one** transaction (group commit).

        Returns the highest stored sequence number of each group's device, in order.
        """
        ...

    def device_status(self, device_id: str) -> DeviceStatus | None:
        """The device's status, or None if it never reported."""
        ...

    def devices(self, limit: int = 1000, offset: int = 0) -> list[DeviceStatus]:
        """Status of the devices that have reported, ordered by device ID."""
        ...

    def fleet_status(self) -> FleetStatus:
        """Totals over the fleet (incidents: the 100 largest kinds)."""
        ...

    def signed_report(self, device_id: str, seq: int) -> bytes | None:
        """The exact signed bytes of a stored report (to verify again, to audit), or None."""
        ...

    def add_incident(self, device_id: str, kind: str, at: int, evidence: str,
                     count: int = 1) -> Incident:
        """Record an incident the fleet itself raised (e.g. ``quiet``), durably; it counts
        in the device's incident totals too (within its kinds cap)."""
        ...

    def incidents(self, device_id: str | None = None, *, since: int = 0,
                  kind: str | None = None, limit: int = 100) -> list[Incident]:
        """Recorded incidents, newest first: of one device or all, received at or after
        ``since``, of one kind or all; at most ``limit`` (capped at
        :data:`MAX_INCIDENTS_LISTED`)."""
        ...

    def reports(self, device_id: str | None = None, *, since: float = 0,
                limit: int = 100) -> list[StoredReport]:
        """Stored reports, newest first (``fleet reports``): of one device by sequence
        number, or of the fleet in the order received; received at or after ``since``."""
        ...

    def update_records(self, component: str, version: str) -> list[UpdateRecord]:
        """Every device that reported an update state, with its failures for the target
        ``component`` ``version`` (by device ID)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS reports (
        device_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        report_time BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        mode TEXT NOT NULL,
        health TEXT NOT NULL,
        results TEXT NOT NULL,
        incidents TEXT NOT NULL,
        signed_packed BLOB NOT NULL,
        pad_at BIGINT NOT NULL DEFAULT 0,
        pad_len BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, seq))""",
    """CREATE TABLE IF NOT EXISTS devices (
        device_id TEXT PRIMARY KEY,
        last_seq BIGINT NOT NULL,
        reports BIGINT NOT NULL,
        last_report_time BIGINT NOT NULL,
        last_received_at BIGINT NOT NULL,
        health TEXT NOT NULL,
        upd_state TEXT,
        upd_versions TEXT,
        upd_why TEXT,
        upd_target TEXT,
        upd_seq BIGINT)""",
    """CREATE TABLE IF NOT EXISTS incidents (
        device_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        total BIGINT NOT NULL,
        PRIMARY KEY (device_id, kind))""",
    # The latest failed/reverted report per device and target ("" "": a report that named
    # no target), for rollouts' halt decisions.
    """CREATE TABLE IF NOT EXISTS update_failures (
        device_id TEXT NOT NULL,
        component TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        why TEXT,
        seq BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (device_id, component, version))""",
)

# Schema version 2: each incident as it arrived (the incidents table keeps only totals).
# SQLite's INTEGER PRIMARY KEY is the rowid: increasing, so newest first is ORDER BY id
# DESC. (PostgreSQL: an identity column; store_pg.py.)
_INCIDENT_EVENTS_ID = "id INTEGER PRIMARY KEY"
_SCHEMA_2_INCIDENT_EVENTS = (
    """CREATE TABLE IF NOT EXISTS incident_events (
        {id},
        device_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        count BIGINT NOT NULL,
        at BIGINT NOT NULL,
        device_time BIGINT,
        seq BIGINT,
        evidence TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS incident_events_device ON incident_events (device_id, id)",
    "CREATE INDEX IF NOT EXISTS incident_events_at ON incident_events (at)",
)

#: Before update states were reported, the devices table had none of these columns.
_UPDATE_COLUMNS = ("upd_state TEXT", "upd_versions TEXT", "upd_why TEXT", "upd_target TEXT",
                   "upd_seq BIGINT")


# The exact signed bytes, from a row (SQLite only: zeroblob). Rows never packed have
# pad_len 0 and hold the whole message.
_SQLITE_VIEWS = (
    """CREATE VIEW IF NOT EXISTS signed_reports AS SELECT device_id, seq,
        CASE WHEN pad_len = 0 THEN signed_packed ELSE CAST(substr(signed_packed, 1, pad_at)
            || zeroblob(pad_len) || substr(signed_packed, pad_at + 1) AS BLOB) END AS signed
        FROM reports""",
)

# Before the packing, reports kept the whole message in a column named "signed".
_MIGRATE_UNPACKED = (
    "ALTER TABLE reports RENAME COLUMN signed TO signed_packed",
    "ALTER TABLE reports ADD COLUMN pad_at BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE reports ADD COLUMN pad_len BIGINT NOT NULL DEFAULT 0",
)

# --- schema migrations (both backends) ---------------------------------------------------
#
# Each database records the migrations applied to it in ``schema_version`` (one row each,
# the current version is the highest). Opening a store applies the missing ones in order,
# in one transaction with the creation of the table, so a database is never half migrated;
# a database newer than this code is refused rather than written in a shape it does not
# know. Migration 1 is the schema as it was when versions began; for SQLite it also
# brings databases from before then (no ``schema_version`` table) up to it.

SCHEMA_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version ("
                        "version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")


class SchemaTooNew(BadInput):
    """The database was migrated by a newer tinyward than this one."""


#: A migration: given an ``execute(sql, params=())`` of an open transaction, changes the schema.
Execute = Callable[..., Any]
Migration = Callable[[Execute], None]


def _migrate(execute: Execute, migrations: Sequence[Migration], where: str,
             placeholder: str = "?") -> int:
    """Apply the ``migrations`` the database lacks, in order; return the version it is at.

    Runs inside the caller's transaction (which holds the database's write lock).
    """
    execute(SCHEMA_VERSION_TABLE)
    row = execute("SELECT MAX(version) FROM schema_version").fetchone()
    version = int(row[0]) if row and row[0] is not None else 0
    if version > len(migrations):
        raise SchemaTooNew(f"{where}: the database is at schema version {version}, newer than "
                           f"this tinyward knows ({len(migrations)}); upgrade tinyward")
    for number in range(version + 1, len(migrations) + 1):
        migrations[number - 1](execute)
        execute(f"INSERT INTO schema_version (version, applied_at) VALUES ({placeholder},"  # noqa: S608
                f" {placeholder})", (number, int(time.time())))
    return len(migrations)


def _sqlite_1_baseline(execute: Execute) -> None:
    """The schema when versions began, from nothing or from the shapes before it."""
    columns = {row[1] for row in execute("PRAGMA table_info(reports)").fetchall()}
    if "signed" in columns:  # before packing
        for statement in _MIGRATE_UNPACKED:
            execute(statement)
    device_columns = {row[1] for row in execute("PRAGMA table_info(devices)").fetchall()}
    if device_columns and "upd_state" not in device_columns:  # before update states
        for column in _UPDATE_COLUMNS:  # nullable: old rows have no update yet
            execute(f"ALTER TABLE devices ADD COLUMN {column}")
    for statement in _SCHEMA:
        execute(statement)


def _sqlite_2_incident_events(execute: Execute) -> None:
    for statement in _SCHEMA_2_INCIDENT_EVENTS:
        execute(statement.format(id=_INCIDENT_EVENTS_ID))


def _sqlite_3_nothing(execute: Execute) -> None:
    """(PostgreSQL indexes reports by receive time; SQLite walks its rowid instead.)"""


#: SQLite's migrations, in order: the ``n``-th brings a database to version ``n``.
_SQLITE_MIGRATIONS: tuple[Migration, ...] = (_sqlite_1_baseline, _sqlite_2_incident_events,
                                             _sqlite_3_nothing)

#: The shortest run of zero bytes worth cutting out of a stored report.
MIN_PACKED_RUN = 64
_ZERO_RUN = bytes(MIN_PACKED_RUN)


def pack_signed(signed: bytes) -> tuple[bytes, int, int]:
    """``(packed, at, length)``: ``signed`` with its first run of at least
    :data:`MIN_PACKED_RUN` zero bytes cut out (a report's padding), where it started and
    how long it was; ``(signed, 0, 0)`` if there is none. :func:`unpack_signed` undoes it."""
    at = signed.find(_ZERO_RUN)
    if at < 0:
        return signed, 0, 0
    rest = signed[at + MIN_PACKED_RUN:].lstrip(b"\0")
    return signed[:at] + rest, at, len(signed) - at - len(rest)


def unpack_signed(packed: bytes, at: int, length: int) -> bytes:
    """The exact bytes :func:`pack_signed` was given."""
    return packed[:at] + bytes(length) + packed[at:] if length else packed


def _json_results(report: Report) -> str:
    """The report's results as the JSON kept beside its signed bytes (for queries)."""
    results = report.results
    if not results:
        return "[]"
    # The verifier builds plain dicts, which json takes as they are; other Mappings (a
    # Report made by hand) are copied first.
    if all(type(result) is dict for result in results):
        return json.dumps(results)
    return json.dumps([dict(result) for result in results])


def _json_incidents(report: Report) -> str:
    # Most reports carry no incident: skip the encoder for them (this runs per report).
    return json.dumps(dict(report.incidents)) if report.incidents else "{}"


#: Rows per INSERT (and devices per IN list): 11 columns x 80 rows stays under the 999
#: variables older SQLite builds allow in one statement. It also bounds what a commit's
#: size (or a device's choice of incident kinds) can make: at most 80 statement shapes a
#: table, each of at most 80 rows, in both caches below.
_ROWS_PER_STATEMENT = 80


@dataclass(frozen=True)
class _Columns:
    """A table's columns for multi-row inserts, and what to do on a key conflict."""

    table: str
    names: tuple[str, ...]
    on_conflict: str = ""


_REPORT_COLUMNS = _Columns("reports", (
    "device_id", "seq", "report_time", "received_at", "mode", "health", "results",
    "incidents", "signed_packed", "pad_at", "pad_len"))
_KEEP_UPDATE = ", ".join(  # a commit without an upd keeps the device's last known one
    f"{c} = CASE WHEN excluded.upd_seq IS NULL THEN devices.{c} ELSE excluded.{c} END"
    for c in ("upd_state", "upd_versions", "upd_why", "upd_target", "upd_seq"))
_DEVICE_COLUMNS = _Columns(
    "devices", ("device_id", "last_seq", "reports", "last_report_time", "last_received_at",
                "health", "upd_state", "upd_versions", "upd_why", "upd_target", "upd_seq"),
    " ON CONFLICT (device_id) DO UPDATE SET last_seq = excluded.last_seq,"
    " reports = devices.reports + excluded.reports,"
    " last_report_time = excluded.last_report_time,"
    " last_received_at = excluded.last_received_at, health = excluded.health, "
    + _KEEP_UPDATE)
_FAILURE_COLUMNS = _Columns(
    "update_failures", ("device_id", "component", "version", "state", "why", "seq",
                        "received_at"),
    " ON CONFLICT (device_id, component, version) DO UPDATE SET state = excluded.state,"
    " why = excluded.why, seq = excluded.seq, received_at = excluded.received_at")
_INCIDENT_COLUMNS = _Columns(
    "incidents", ("device_id", "kind", "total"),
    " ON CONFLICT (device_id, kind) DO UPDATE SET total = incidents.total + excluded.total")
_EVENT_COLUMNS = _Columns(
    "incident_events", ("device_id", "kind", "count", "at", "device_time", "seq", "evidence"))
_STATEMENT_SHAPES = 5 * _ROWS_PER_STATEMENT + 16  # the inserts above, and a few others

#: Each group's device and its reports, each with its row of the reports table.
_Rows = list[tuple[str, list[tuple[Report, tuple[object, ...]]]]]
#: What a backend made of one report before its commit (SQLite: its row's values).
_Row = TypeVar("_Row")


@functools.lru_cache(maxsize=_STATEMENT_SHAPES)
def _insert_sql(columns: _Columns, rows: int) -> str:
    """``INSERT INTO table (columns) VALUES (?, …), (?, …) …`` for ``rows`` rows."""
    one = "(" + ", ".join("?" * len(columns.names)) + ")"
    # Table and column names are this module's constants; every value is a placeholder.
    return (f"INSERT INTO {columns.table} ({', '.join(columns.names)}) VALUES "  # noqa: S608
            + ", ".join([one] * rows) + columns.on_conflict)


@dataclass
class CommitPlan(Generic[_Row]):
    """What one commit writes, decided from its reports and each device's last stored
    sequence number: the same rules on every backend (each turns it into its own SQL)."""

    #: Per group, the device's last sequence number after it (what ``append_many`` returns).
    stored: list[int]
    #: The reports to store, in order, each with what the backend made of it (its row).
    fresh: list[tuple[str, Report, _Row]]
    #: device -> (its newest fresh report, how many fresh reports it has).
    newest: dict[str, tuple[Report, int]]
    #: device -> its newest fresh report that carries an update status.
    updates: dict[str, Report]
    #: (device, component, version) -> the update_failures row.
    failures: dict[tuple[str, str, str], tuple[object, ...]]
    #: (device, kind) -> the count to add to the device's total.
    incidents: dict[tuple[str, str], int]
    #: (device, kind, count, report): one incident_events row each (counts above 0).
    events: list[tuple[str, str, int, Report]]


def check_groups(groups: Sequence[tuple[str, Sequence[tuple[Report, bytes]]]]) -> None:
    """Refuse, before anything is touched, a group holding another device's report (a
    caller bug: every backend's ``append_many`` checks it first)."""
    for device_id, reports in groups:
        if any(report.device_id != device_id for report, _ in reports):
            raise ValueError("append() got a report of another device")


def plan_commit(groups: Sequence[tuple[str, Sequence[tuple[Report, _Row]]]],
                last: dict[str, int], received_at: int) -> CommitPlan[_Row]:
    """The rows of one commit (pure): a report whose seq is not above the device's last
    stored one is skipped (a replay, or another commit won); ``last`` is not changed."""
    last = dict(last)
    plan: CommitPlan[_Row] = CommitPlan([], [], {}, {}, {}, {}, [])
    newest, incidents = plan.newest, plan.incidents
    for device_id, reports in groups:
        seq = last[device_id]
        for report, row in reports:
            if is_replay(report.seq, seq):  # stored already (a replay, or another won)
                continue
            seq = report.seq
            plan.fresh.append((device_id, report, row))
            newest[device_id] = (report, newest.get(device_id, (report, 0))[1] + 1)
            if report.update is not None:
                plan.updates[device_id] = report
                if report.update.state in _FAILED_STATES:
                    component, version = report.update.target or ("", "")
                    plan.failures[device_id, component, version] = (
                        device_id, component, version, report.update.state,
                        report.update.why, report.seq, received_at)
            for kind, count in report.incidents.items():
                incidents[device_id, kind] = incidents.get((device_id, kind), 0) + count
                if count > 0:
                    plan.events.append((device_id, kind, count, report))
        last[device_id] = seq
        plan.stored.append(seq)
    return plan


def cap_kinds(incidents: dict[tuple[str, str], int], known: dict[str, set[str]],
              max_kinds: int) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
    """Fold the new kinds of a device that has ``max_kinds`` kinds into "other" (pure;
    ``known``: each device's stored kinds, updated here).

    Returns the capped totals and the ``(device, kind)`` pairs kept under their own name.
    """
    capped: dict[tuple[str, str], int] = {}
    kept: set[tuple[str, str]] = set()
    for (device_id, kind), total in sorted(incidents.items()):
        kinds = known[device_id]
        if kind not in kinds:
            if len(kinds) >= max_kinds - 1 and kind != OTHER_KIND:
                kind = OTHER_KIND  # one slot stays for "other"
            kinds.add(kind)
        kept.add((device_id, kind))
        capped[device_id, kind] = capped.get((device_id, kind), 0) + total
    return capped, kept


def incidents_query(mark: str, device_id: str | None, since: int, kind: str | None,
                    limit: int) -> tuple[str, tuple[object, ...]]:
    """``ReportStore.incidents``' SQL and values; ``mark``: the driver's placeholder."""
    where = [f"at >= {mark}"]
    args: list[object] = [since]
    if device_id is not None:
        where.append(f"device_id = {mark}")
        args.append(device_id)
    if kind is not None:
        where.append(f"kind = {mark}")
        args.append(kind)
    # The conditions are these constants; every value is a placeholder.
    sql = ("SELECT id, device_id, kind, count, at, device_time, seq, evidence"  # noqa: S608
           f" FROM incident_events WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {mark}")
    return sql, (*args, max(0, min(limit, MAX_INCIDENTS_LISTED)))


def incident_of(row: Sequence[Any]) -> Incident:
    """An :class:`Incident` from a row of :func:`incidents_query`."""
    return Incident(int(row[0]), str(row[1]), str(row[2]), int(row[3]), int(row[4]),
                    None if row[5] is None else int(row[5]),
                    None if row[6] is None else int(row[6]), str(row[7]))


class SQLiteStore:
    """:class:`ReportStore` on SQLite, WAL mode, ``synchronous=FULL``.

    One connection guarded by a lock: safe to call from an executor thread. Several
    processes may open the same file (SQLite's own locking serialises the writers).

    The database and its ``-wal`` and ``-shm`` files are private (0600): SQLite gives the
    latter two the database file's mode, so the file is made 0600 before SQLite opens it
    (and an older one is narrowed).

    ``max_incident_kinds`` bounds the distinct incident kinds kept per device: a device
    that names more (4,500 reports of 32 fresh names each made 144,000 kinds and a 36 MB
    database) has the counts of every further new kind added to :data:`OTHER_KIND`.
    """

    def __init__(self, path: str | Path, *, max_incident_kinds: int = 64) -> None:
        self.path = Path(path)
        self.max_incident_kinds = max_incident_kinds
        self._lock = threading.Lock()
        _make_private(self.path)
        # Writers in several processes queue on an flock (woken the moment it is free)
        # rather than on SQLite's busy handler, which sleeps up to 100 ms between tries.
        self._write_lock_fd = os.open(f"{self.path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
        # Room for a prepared statement per shape of the multi-row inserts (see above).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0, cached_statements=_STATEMENT_SHAPES)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BadDatabaseUrl(f"{self.path}: SQLite refused WAL mode (got {mode})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            # IMMEDIATE: two processes opening an old database migrate it once, in turn.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                _migrate(self._db.execute, _SQLITE_MIGRATIONS, str(self.path))
                for statement in _SQLITE_VIEWS:
                    self._db.execute(statement)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def reader(self) -> SQLiteStore:
        """Another connection to the same database, for reads that must not queue behind
        (or hold up) this one's writes: the admin queries of the fleet server."""
        return SQLiteStore(self.path, max_incident_kinds=self.max_incident_kinds)

    def last_seq(self, device_id: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT last_seq FROM devices WHERE device_id = ?",
                                   (device_id,)).fetchone()
        return int(row[0]) if row else 0

    def append(self, device_id: str, reports: Sequence[tuple[Report, bytes]],
               received_at: int) -> int:
        return self.append_many([(device_id, reports)], received_at)[0]

    def append_many(self, groups: Sequence[tuple[str, Sequence[tuple[Report, bytes]]]],
                    received_at: int) -> list[int]:
        check_groups(groups)
        # The rows are made before the write lock is taken: the other server processes
        # wait for that lock, and only the statements need it.
        rows: _Rows = [(device_id, [(report, (device_id, report.seq, report.timestamp, received_at,
                                        report.mode, report.health, _json_results(report),
                                        _json_incidents(report), *pack_signed(signed)))
                             for report, signed in reports])
                for device_id, reports in groups]
        with self._lock:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX)
            try:
                # IMMEDIATE takes SQLite's write lock first, so the read of last_seq and the
                # inserts are one atomic step even with several server processes.
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    stored = self._append_locked(rows, received_at)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            finally:
                fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)
        return stored

    def _append_locked(self, groups: _Rows, received_at: int) -> list[int]:
        """The writes of one commit, in a few statements whatever its size.

        Python's sqlite3 releases and retakes the GIL around every step of a statement
        (every row of an ``executemany``, every row fetched). In the fleet server this runs
        in a thread while the event loop thread keeps the GIL busy verifying signatures,
        and each retake can wait for it: a commit of a thousand reports took hundreds of
        milliseconds, and the handing over of the GIL cost CPU too. So the last sequence
        numbers come in one row (``json_group_object``), the reports go in multi-row
        INSERTs and the device and incident totals in one upsert each.
        """
        devices = list(dict.fromkeys(device_id for device_id, _ in groups))
        # (SQLite-only: json_group_object; a PostgreSQL backend would use json_object_agg.)
        last: dict[str, int] = dict.fromkeys(devices, 0)
        for start in range(0, len(devices), _ROWS_PER_STATEMENT):
            chunk = devices[start:start + _ROWS_PER_STATEMENT]
            marks = ", ".join("?" * len(chunk))  # placeholders only: no value in the text
            (found,) = self._db.execute(
                f"SELECT json_group_object(device_id, last_seq) FROM devices WHERE device_id IN ({marks})",  # noqa: E501, S608
                chunk).fetchone()
            last.update(json.loads(found))
        plan = plan_commit(groups, last, received_at)
        stored, newest, updates, failures, incidents, events = (
            plan.stored, plan.newest, plan.updates, plan.failures, plan.incidents, plan.events)
        self._insert(_REPORT_COLUMNS, [value for _, _, row in plan.fresh for value in row])
        self._insert(_DEVICE_COLUMNS, [
            value for device_id, (report, count) in newest.items()
            for value in (device_id, report.seq, count, report.timestamp, received_at,
                          report.health, *_update_columns(updates.get(device_id)))])
        self._insert(_FAILURE_COLUMNS, [value for row in failures.values() for value in row])
        if incidents:
            incidents, kept = self._cap_kinds(incidents)
            self._insert(_EVENT_COLUMNS, [
                value for device_id, kind, count, report in events
                for value in (device_id, kind if (device_id, kind) in kept else OTHER_KIND,
                              count, received_at, report.timestamp, report.seq,
                              f"report seq {report.seq}")])
        self._insert(_INCIDENT_COLUMNS, [
            value for (device_id, kind), total in sorted(incidents.items())
            for value in (device_id, kind, total)])
        return stored

    def _cap_kinds(self, incidents: dict[tuple[str, str], int]
                   ) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
        """Fold the new kinds of a device that has :attr:`max_incident_kinds` into "other".

        Returns the capped totals and the ``(device, kind)`` pairs kept under their own
        name. Only commits that carry incidents pay for this (one query); most carry none.
        """
        devices = sorted({device_id for device_id, _ in incidents})
        known: dict[str, set[str]] = {device_id: set() for device_id in devices}
        for start in range(0, len(devices), _ROWS_PER_STATEMENT):
            chunk = devices[start:start + _ROWS_PER_STATEMENT]
            marks = ", ".join("?" * len(chunk))  # placeholders only: the IDs are bound
            for device_id, kind in self._db.execute(
                    f"SELECT device_id, kind FROM incidents WHERE device_id IN ({marks})",  # noqa: S608
                    chunk).fetchall():
                known[device_id].add(kind)
        return cap_kinds(incidents, known, self.max_incident_kinds)

    def _insert(self, columns: _Columns, values: list[object]) -> None:
        """Insert (or upsert) flattened rows, at most :data:`_ROWS_PER_STATEMENT` a statement."""
        step = len(columns.names) * _ROWS_PER_STATEMENT
        for start in range(0, len(values), step):
            part = values[start:start + step]
            self._db.execute(_insert_sql(columns, len(part) // len(columns.names)), part)

    def device_status(self, device_id: str) -> DeviceStatus | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_STATUS_COLUMNS} FROM devices WHERE device_id = ?",  # noqa: S608
                (device_id,)).fetchone()
            if row is None:
                return None
            return self._status(row)

    def devices(self, limit: int = 1000, offset: int = 0) -> list[DeviceStatus]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_STATUS_COLUMNS} FROM devices ORDER BY device_id"  # noqa: S608
                " LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            return [self._status(row) for row in rows]

    def _status(self, row: tuple[object, ...]) -> DeviceStatus:
        incidents = dict(self._db.execute(
            "SELECT kind, total FROM incidents WHERE device_id = ? ORDER BY kind",
            (row[0],)).fetchall())
        return DeviceStatus(str(row[0]), int(row[1]), int(row[2]), int(row[3]),  # type: ignore[call-overload]
                            int(row[4]), str(row[5]), incidents,  # type: ignore[call-overload]
                            _device_update(row[6:]))

    def add_incident(self, device_id: str, kind: str, at: int, evidence: str,
                     count: int = 1) -> Incident:
        if count < 1:
            raise ValueError("an incident counts at least 1")
        with self._lock:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    capped, _ = self._cap_kinds({(device_id, kind): count})
                    ((_, kind), total), = capped.items()
                    self._insert(_INCIDENT_COLUMNS, [device_id, kind, total])
                    cursor = self._db.execute(
                        "INSERT INTO incident_events (device_id, kind, count, at, device_time,"
                        " seq, evidence) VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                        (device_id, kind, count, at, evidence))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            finally:
                fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)
        return Incident(int(cursor.lastrowid or 0), device_id, kind, count, at, None, None,
                        evidence)

    def incidents(self, device_id: str | None = None, *, since: int = 0,
                  kind: str | None = None, limit: int = 100) -> list[Incident]:
        sql, args = incidents_query("?", device_id, since, kind, limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [incident_of(row) for row in rows]

    def update_records(self, component: str, version: str) -> list[UpdateRecord]:
        if component not in _COMPONENTS:  # it becomes a JSON path (bound, all the same)
            raise ValueError(f"unknown component {component!r}")
        # (SQLite-only: json_extract; PostgreSQL would use upd_versions::json ->> ?.) One
        # row per device, the component's version only: no JSON decoding per device here.
        with self._lock:
            rows = self._db.execute(
                "SELECT d.device_id, d.upd_state, json_extract(d.upd_versions, ?),"
                " (SELECT MAX(f.received_at) FROM update_failures f WHERE"
                " f.device_id = d.device_id AND ((f.component = ? AND f.version = ?) OR"
                " (f.component = '' AND f.version = ''))) FROM devices d"
                " WHERE d.upd_seq IS NOT NULL ORDER BY d.device_id",
                (f"$.{component}", component, version)).fetchall()
        return [UpdateRecord(device_id, state, installed, failed_at)
                for device_id, state, installed, failed_at in rows]

    def fleet_status(self) -> FleetStatus:
        with self._lock:
            devices, reports, degraded = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(reports), 0),"
                " COALESCE(SUM(CASE WHEN health = 'degraded' THEN 1 ELSE 0 END), 0)"
                " FROM devices").fetchone()
            # The largest FLEET_INCIDENT_KINDS kinds only: the answer stays small however
            # many kinds the devices name (each device keeps at most max_incident_kinds).
            incidents = dict(sorted(self._db.execute(
                "SELECT kind, SUM(total) AS n FROM incidents GROUP BY kind ORDER BY n DESC,"
                " kind LIMIT ?", (FLEET_INCIDENT_KINDS,)).fetchall()))
        return FleetStatus(int(devices), int(reports), int(degraded), incidents)

    def signed_report(self, device_id: str, seq: int) -> bytes | None:
        """The exact signed bytes of a stored report (to verify again, to audit), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT signed_packed, pad_at, pad_len FROM reports WHERE device_id = ?"
                " AND seq = ?", (device_id, seq)).fetchone()
        return None if row is None else unpack_signed(bytes(row[0]), int(row[1]), int(row[2]))

    def reports(self, device_id: str | None = None, *, since: float = 0,
                limit: int = 100) -> list[StoredReport]:
        """Stored reports, newest first (one device's by sequence number; the fleet's by
        insertion order, which is receive order: both walk an index backwards and stop
        after ``limit`` rows), received at or after ``since``."""
        where = "received_at >= ?"
        args: list[object] = [since]
        if device_id is not None:
            where, order = where + " AND device_id = ?", "seq DESC"
            args.append(device_id)
        else:
            order = "rowid DESC"
        with self._lock:
            rows = self._db.execute(
                # where/order are this method's constants; every value is a placeholder.
                "SELECT device_id, seq, report_time, received_at, mode, health, results,"  # noqa: S608
                f" incidents FROM reports WHERE {where} ORDER BY {order} LIMIT ?",
                (*args, limit)).fetchall()
        return [StoredReport(str(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4]), str(r[5]),
                             json.loads(r[6]), json.loads(r[7])) for r in rows]

    def count_reports(self, device_id: str) -> int:
        """Rows in the reports table for the device (tests and audits compare it with status)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM reports WHERE device_id = ?",
                                        (device_id,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._write_lock_fd >= 0:  # twice is harmless (never another file's fd)
                os.close(self._write_lock_fd)
                self._write_lock_fd = -1


_FAILED_STATES = frozenset({"failed", "reverted"})
_STATUS_COLUMNS = ("device_id, last_seq, reports, last_report_time, last_received_at, health,"
                   " upd_state, upd_versions, upd_why, upd_target, upd_seq")


def _update_columns(report: Report | None) -> tuple[object, ...]:
    """The devices table's upd_* values of a report (all NULL: it has no upd)."""
    if report is None or report.update is None:
        return (None, None, None, None, None)
    update = report.update
    return (update.state, json.dumps(dict(update.versions)), update.why,
            None if update.target is None else json.dumps(list(update.target)), report.seq)


def _device_update(row: Sequence[object]) -> DeviceUpdate | None:
    state, versions, why, target, seq = row
    if seq is None:
        return None
    pair: tuple[str, str] | None = None
    if target is not None:
        component, version = json.loads(str(target))
        pair = (str(component), str(version))
    return DeviceUpdate(str(state), json.loads(str(versions)),
                        None if why is None else str(why), pair,
                        int(seq))  # type: ignore[call-overload]


#: Where the counts of a device's incident kinds beyond its cap go.
OTHER_KIND = "other"
#: Incident kinds in the fleet's totals (the largest ones).
FLEET_INCIDENT_KINDS = 100
#: The most incidents one :meth:`ReportStore.incidents` call returns.
MAX_INCIDENTS_LISTED = 10_000


def _make_private(path: Path) -> None:
    """Create the database file 0600 (SQLite then makes -wal and -shm alike), or narrow
    the mode of existing ones.

    An existing file is never opened here: closing any descriptor of it drops every
    POSIX lock this process holds on it, SQLite's included, and another process that
    closes its last connection then thinks it is the last one and deletes the WAL under
    this one (acknowledged commits lost; tests/fleet/test_nodes.py)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
    else:
        os.close(fd)  # a new file: no connection of this process has locks on it yet
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


def open_store(url: str, *, max_incident_kinds: int = 64) -> ReportStore:
    """Open the store a URL names: ``sqlite:///PATH`` or ``postgresql://user@host:port/db``
    (:mod:`tinyward.fleet.store_pg`), migrating its schema to this version.

    Raises:
        BadDatabaseUrl: an unknown scheme, a host part, or no path.
        SchemaTooNew: the database was migrated by a newer tinyward.
        tinyward.fleet.store_pg.DatabaseUnavailable: PostgreSQL could not be reached.
    """
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        from tinyward.fleet.store_pg import PostgresStore  # psycopg only for those who use it

        return PostgresStore(url, max_incident_kinds=max_incident_kinds)
    if parts.scheme != "sqlite":
        raise BadDatabaseUrl(f"database URL {url.split('://')[0]}://…: use sqlite:///PATH "
                             "or postgresql://user@host:port/db")
    if parts.netloc:
        raise BadDatabaseUrl(f"database URL {url!r}: SQLite takes no host; write sqlite:///PATH")
    path = parts.path.removeprefix("/")
    if not path or parts.query or parts.fragment:
        raise BadDatabaseUrl(f"database URL {url!r}: give a file path, as in sqlite:///fleet.db")
    if not Path(path).parent.is_dir():
        raise BadDatabaseUrl(f"database URL {url!r}: folder {Path(path).parent} does not exist")
    return SQLiteStore(path, max_incident_kinds=max_incident_kinds)
