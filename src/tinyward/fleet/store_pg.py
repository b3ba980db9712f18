"""The :class:`~tinyward.fleet.store.ReportStore` on PostgreSQL (psycopg 3, a connection pool).

For fleets served by several machines: every server node opens the same database with
``--db postgresql://user@host:port/db``. The promises are SQLite's:

- **Acked means durable.** :meth:`PostgresStore.append_many` returns after ``COMMIT``
  with ``synchronous_commit = on`` (set on every pooled connection: the WAL record of the
  commit is flushed before the commit returns), so the server acknowledges only what is
  on disk. One call is one transaction however many devices it carries (group commit).
- **Exactly once.** A report whose ``seq`` is not above the device's stored last one is
  skipped, inside the transaction. Two servers racing for one device serialise on a
  transaction-scoped advisory lock per device, taken before the last sequence numbers
  are read (``SELECT … FOR UPDATE`` would lock nothing for a device's first report, whose
  row does not exist yet); locks are taken in one sorted order, so group commits that
  share devices cannot deadlock. The primary key ``(device_id, seq)`` stays as a last
  line: a bug here would fail a commit rather than store twice.
- **Bounded incident kinds** per device, as in SQLite (``max_incident_kinds``, the rest
  in ``other``).

Schema migrations are numbered as SQLite's (``schema_version``), applied at open under an
advisory lock so that several nodes starting at once migrate once. The statements'
column lists and ``ON CONFLICT`` clauses are shared with SQLite (``store._Columns``);
rows go in as one array per column (``INSERT … SELECT * FROM unnest(…)``), one statement
per table whatever the commit's size.

URL: ``postgresql://user[:password]@host[:port]/db`` (libpq's URI, so ``?host=/socket/dir``
and ``?sslmode=…`` work), plus ``pool_size=N`` (connections per store, default
:data:`DEFAULT_POOL_SIZE`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from tinyward.errors import TinywardError
from tinyward.fleet.store import (
    _DEVICE_COLUMNS,
    _EVENT_COLUMNS,
    _FAILED_STATES,
    _FAILURE_COLUMNS,
    _INCIDENT_COLUMNS,
    _REPORT_COLUMNS,
    _SCHEMA,
    _SCHEMA_2_INCIDENT_EVENTS,
    _STATUS_COLUMNS,
    FLEET_INCIDENT_KINDS,
    MAX_INCIDENTS_LISTED,
    OTHER_KIND,
    BadDatabaseUrl,
    DeviceStatus,
    FleetStatus,
    Incident,
    Migration,
    StoredReport,
    UpdateRecord,
    _Columns,
    _device_update,
    _json_incidents,
    _json_results,
    _migrate,
    _update_columns,
    pack_signed,
    unpack_signed,
)
from tinyward.trust.replay import is_replay
from tinyward.trust.report import Report
from tinyward.update.meta import COMPONENTS as _COMPONENTS

#: Connections each store keeps open at most (a server process uses one for its group
#: commits, and one at a time for status reads and sequence lookups).
DEFAULT_POOL_SIZE = 4
#: Seconds to wait for a first connection, or for a free one from the pool.
CONNECT_TIMEOUT = 10.0


class DatabaseUnavailable(TinywardError):
    """The PostgreSQL server could not be reached, refused the connection, or refused to
    let this role create or migrate the tables."""


# The column types of each table, for the arrays of ``unnest``.
_TYPES = {
    "reports": ("text", "bigint", "bigint", "bigint", "text", "text", "text", "text", "bytea",
                "bigint", "bigint"),
    "devices": ("text", "bigint", "bigint", "bigint", "bigint", "text", "text", "text", "text",
                "text", "bigint"),
    "update_failures": ("text", "text", "text", "text", "text", "bigint", "bigint"),
    "incidents": ("text", "text", "bigint"),
    "incident_events": ("text", "text", "bigint", "bigint", "bigint", "bigint", "text"),
}


def _unnest_sql(columns: _Columns) -> str:
    """``INSERT INTO table (columns) SELECT * FROM unnest(%b::type[], …) ON CONFLICT …``."""
    # %b: binary parameters. Text-format arrays quote every element with a regular
    # expression, which was half the CPU of a commit.
    arrays = ", ".join(f"%b::{kind}[]" for kind in _TYPES[columns.table])
    # Table and column names are store.py's constants; every value is a bound array.
    return (f"INSERT INTO {columns.table} ({', '.join(columns.names)})"  # noqa: S608
            f" SELECT * FROM unnest({arrays}){columns.on_conflict}")


_INSERTS = {columns.table: _unnest_sql(columns) for columns in
            (_REPORT_COLUMNS, _DEVICE_COLUMNS, _FAILURE_COLUMNS, _INCIDENT_COLUMNS,
             _EVENT_COLUMNS)}


def _pg_1_baseline(execute: Callable[..., Any]) -> None:
    """The schema SQLite has at version 1 (``BYTEA`` for ``BLOB``), and the audit view."""
    for statement in _SCHEMA:
        execute(statement.replace(" BLOB ", " BYTEA "))
    execute("""CREATE OR REPLACE VIEW signed_reports AS SELECT device_id, seq,
        CASE WHEN pad_len = 0 THEN signed_packed ELSE
            substring(signed_packed FROM 1 FOR pad_at::int)
            || decode(repeat('00', pad_len::int), 'hex')
            || substring(signed_packed FROM pad_at::int + 1) END AS signed
        FROM reports""")


def _pg_2_incident_events(execute: Callable[..., Any]) -> None:
    """Incidents as events. Identity values follow insertion, not commit, order: with
    several writers, "newest first" is exact per writer and close to it across them."""
    for statement in _SCHEMA_2_INCIDENT_EVENTS:
        execute(statement.format(id="id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"))


def _pg_3_reports_received(execute: Callable[..., Any]) -> None:
    """The fleet's newest reports (``reports()``) by an index (SQLite walks its rowid)."""
    execute("CREATE INDEX IF NOT EXISTS reports_received ON reports (received_at)")


#: PostgreSQL's migrations, numbered as SQLite's.
_PG_MIGRATIONS: tuple[Migration, ...] = (_pg_1_baseline, _pg_2_incident_events,
                                         _pg_3_reports_received)

#: The advisory lock key held while migrating (any constant: it names tinyward's schema).
_MIGRATION_LOCK = 0x74696E7977617264 >> 1  # "tinyward", as a positive bigint


def _device_lock_key(device_id: str) -> int:
    """A device's advisory lock key: a signed 64-bit hash of its ID (a collision only
    makes two devices' commits wait for each other)."""
    return int.from_bytes(hashlib.blake2b(device_id.encode(), digest_size=8).digest(),
                          "big", signed=True)


def parse_url(url: str) -> tuple[str, int]:
    """``(libpq conninfo URL, pool size)`` of a ``postgresql://`` URL.

    Raises:
        BadDatabaseUrl: another scheme, no database name, or a bad ``pool_size``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise BadDatabaseUrl(f"database URL {_redacted(url)!r}: not a postgresql:// URL")
    if not parts.path.strip("/"):
        raise BadDatabaseUrl(f"database URL {_redacted(url)!r}: name the database, as in "
                             "postgresql://user@host:5432/fleet")
    query, pool_size = [], DEFAULT_POOL_SIZE
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "pool_size":
            if not value.isdigit() or not 1 <= int(value) <= 256:
                raise BadDatabaseUrl(f"database URL {_redacted(url)!r}: pool_size must be "
                                     "a whole number from 1 to 256")
            pool_size = int(value)
        else:
            query.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(query))), pool_size


def _redacted(url: str) -> str:
    """The URL without its password (error messages and logs never show it)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _configure(connection: psycopg.Connection[Any]) -> None:
    # Durable acks: the server's default, but a role or database setting could turn it off.
    connection.execute("SET synchronous_commit = on")
    connection.commit()


class PostgresStore:
    """:class:`~tinyward.fleet.store.ReportStore` on PostgreSQL; thread-safe (a pool).

    ``unsafe_no_device_lock`` leaves out the per-device lock, for the test that shows the
    race it prevents; never set it otherwise.
    """

    def __init__(self, url: str, *, max_incident_kinds: int = 64,
                 unsafe_no_device_lock: bool = False) -> None:
        self.url = url
        self.max_incident_kinds = max_incident_kinds
        self._unsafe_no_device_lock = unsafe_no_device_lock
        #: Tests only: called between reading the last sequence numbers and writing.
        self._between_read_and_write: Callable[[], None] | None = None
        conninfo, pool_size = parse_url(url)
        try:
            with psycopg.connect(conninfo, connect_timeout=int(CONNECT_TIMEOUT)) as first, \
                    first.transaction():
                # Nodes starting together: one migrates, the others then find it done.
                first.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                _migrate(first.execute, _PG_MIGRATIONS, _redacted(url), "%s")
        except psycopg.Error as error:  # unreachable, refused, or no right to migrate
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise DatabaseUnavailable(f"PostgreSQL at {_redacted(url)}: {first_line}") from None
        # check: a pooled connection is tried (an empty query) before each use, so a
        # database restart costs one reconnect instead of a failed commit per connection.
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size,
                                    configure=_configure, timeout=CONNECT_TIMEOUT,
                                    check=ConnectionPool.check_connection,
                                    name="tinyward-store", open=False)
        self._pool.open()
        try:
            self._pool.wait(CONNECT_TIMEOUT)
        except PoolTimeout:
            self._pool.close()
            raise DatabaseUnavailable(f"PostgreSQL at {_redacted(url)}: no connection in "
                                      f"{CONNECT_TIMEOUT:.0f} s") from None

    def last_seq(self, device_id: str) -> int:
        with self._pool.connection() as connection:
            row = connection.execute("SELECT last_seq FROM devices WHERE device_id = %s",
                                     (device_id,)).fetchone()
        return int(row[0]) if row else 0

    def append(self, device_id: str, reports: Sequence[tuple[Report, bytes]],
               received_at: int) -> int:
        return self.append_many([(device_id, reports)], received_at)[0]

    def append_many(self, groups: Sequence[tuple[str, Sequence[tuple[Report, bytes]]]],
                    received_at: int) -> list[int]:
        for device_id, reports in groups:  # a caller bug: refuse before touching anything
            if any(report.device_id != device_id for report, _ in reports):
                raise ValueError("append() got a report of another device")
        devices = list(dict.fromkeys(device_id for device_id, _ in groups))
        with self._pool.connection() as connection, connection.transaction():
            cursor = connection.cursor()
            if not self._unsafe_no_device_lock:
                # Sorted and distinct: two commits sharing devices lock them in one order.
                keys = sorted({_device_lock_key(device_id) for device_id in devices})
                cursor.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) k",
                               (keys,))
            last: dict[str, int] = dict.fromkeys(devices, 0)
            cursor.execute("SELECT device_id, last_seq FROM devices WHERE device_id = ANY(%s)",
                           (devices,))
            last.update((str(device), int(seq)) for device, seq in cursor.fetchall())
            if self._between_read_and_write is not None:
                self._between_read_and_write()
            stored = self._write(cursor, groups, last, received_at)
        return stored

    def _write(self, cursor: psycopg.Cursor[Any],
               groups: Sequence[tuple[str, Sequence[tuple[Report, bytes]]]],
               last: dict[str, int], received_at: int) -> list[int]:
        """The rows of one commit (SQLiteStore._append_locked's rules; the store suite's
        model test holds both backends to the same answers)."""
        stored: list[int] = []
        reports_rows: list[tuple[object, ...]] = []
        newest: dict[str, tuple[Report, int]] = {}
        updates: dict[str, Report] = {}
        failures: dict[tuple[str, str, str], tuple[object, ...]] = {}
        incidents: dict[tuple[str, str], int] = {}
        events: list[tuple[str, str, int, Report]] = []  # (device, kind, count, report)
        for device_id, reports in groups:
            seq = last[device_id]
            for report, signed in reports:
                if is_replay(report.seq, seq):  # stored already (a replay, or another won)
                    continue
                seq = report.seq
                reports_rows.append((device_id, report.seq, report.timestamp, received_at,
                                     report.mode, report.health, _json_results(report),
                                     _json_incidents(report), *pack_signed(signed)))
                newest[device_id] = (report, newest.get(device_id, (report, 0))[1] + 1)
                if report.update is not None:
                    updates[device_id] = report
                    if report.update.state in _FAILED_STATES:
                        component, version = report.update.target or ("", "")
                        failures[device_id, component, version] = (
                            device_id, component, version, report.update.state,
                            report.update.why, report.seq, received_at)
                for kind, count in report.incidents.items():
                    incidents[device_id, kind] = incidents.get((device_id, kind), 0) + count
                    if count > 0:
                        events.append((device_id, kind, count, report))
            last[device_id] = seq
            stored.append(seq)
        _insert(cursor, _REPORT_COLUMNS, reports_rows)
        _insert(cursor, _DEVICE_COLUMNS, [
            (device_id, report.seq, count, report.timestamp, received_at, report.health,
             *_update_columns(updates.get(device_id)))
            for device_id, (report, count) in sorted(newest.items())])
        _insert(cursor, _FAILURE_COLUMNS, [failures[key] for key in sorted(failures)])
        if incidents:
            incidents, kept = self._cap_kinds(cursor, incidents)
            _insert(cursor, _EVENT_COLUMNS, [
                (device_id, kind if (device_id, kind) in kept else OTHER_KIND, count,
                 received_at, report.timestamp, report.seq, f"report seq {report.seq}")
                for device_id, kind, count, report in events])
            _insert(cursor, _INCIDENT_COLUMNS, [
                (device_id, kind, total) for (device_id, kind), total in sorted(incidents.items())])
        return stored

    def _cap_kinds(self, cursor: psycopg.Cursor[Any], incidents: dict[tuple[str, str], int]
                   ) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
        """Fold the new kinds of a device that has :attr:`max_incident_kinds` into "other"
        (as ``SQLiteStore._cap_kinds``); also the ``(device, kind)`` pairs kept as named."""
        devices = sorted({device_id for device_id, _ in incidents})
        known: dict[str, set[str]] = {device_id: set() for device_id in devices}
        cursor.execute("SELECT device_id, kind FROM incidents WHERE device_id = ANY(%s)",
                       (devices,))
        for device_id, kind in cursor.fetchall():
            known[device_id].add(kind)
        capped: dict[tuple[str, str], int] = {}
        kept: set[tuple[str, str]] = set()
        for (device_id, kind), total in sorted(incidents.items()):
            kinds = known[device_id]
            if kind not in kinds:
                if len(kinds) >= self.max_incident_kinds - 1 and kind != OTHER_KIND:
                    kind = OTHER_KIND  # one slot stays for "other"
                kinds.add(kind)
            kept.add((device_id, kind))
            capped[device_id, kind] = capped.get((device_id, kind), 0) + total
        return capped, kept

    def add_incident(self, device_id: str, kind: str, at: int, evidence: str,
                     count: int = 1) -> Incident:
        if count < 1:
            raise ValueError("an incident counts at least 1")
        with self._pool.connection() as connection, connection.transaction():
            cursor = connection.cursor()
            # The device's lock: a report's commit and this one must not both take the
            # last free kind slot.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_device_lock_key(device_id),))
            capped, _ = self._cap_kinds(cursor, {(device_id, kind): count})
            ((_, kind), total), = capped.items()
            _insert(cursor, _INCIDENT_COLUMNS, [(device_id, kind, total)])
            cursor.execute(
                "INSERT INTO incident_events (device_id, kind, count, at, device_time, seq,"
                " evidence) VALUES (%s, %s, %s, %s, NULL, NULL, %s) RETURNING id",
                (device_id, kind, count, at, evidence))
            row = cursor.fetchone()
        return Incident(int(row[0]) if row else 0, device_id, kind, count, at, None, None,
                        evidence)

    def incidents(self, device_id: str | None = None, *, since: int = 0,
                  kind: str | None = None, limit: int = 100) -> list[Incident]:
        limit = max(0, min(limit, MAX_INCIDENTS_LISTED))
        where = ["at >= %s"]
        args: list[object] = [since]
        if device_id is not None:
            where.append("device_id = %s")
            args.append(device_id)
        if kind is not None:
            where.append("kind = %s")
            args.append(kind)
        with self._pool.connection() as connection:
            rows = connection.execute(
                # The conditions are this method's constants; every value is a placeholder.
                "SELECT id, device_id, kind, count, at, device_time, seq, evidence"  # noqa: S608
                f" FROM incident_events WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
                (*args, limit)).fetchall()
        return [Incident(int(row[0]), str(row[1]), str(row[2]), int(row[3]), int(row[4]),
                         None if row[5] is None else int(row[5]),
                         None if row[6] is None else int(row[6]), str(row[7]))
                for row in rows]

    def device_status(self, device_id: str) -> DeviceStatus | None:
        found = self._statuses(" WHERE device_id = %s", (device_id,))
        return found[0] if found else None

    def devices(self, limit: int = 1000, offset: int = 0) -> list[DeviceStatus]:
        return self._statuses(" ORDER BY device_id LIMIT %s OFFSET %s", (limit, offset))

    def _statuses(self, where: str, params: tuple[object, ...]) -> list[DeviceStatus]:
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT {_STATUS_COLUMNS} FROM devices{where}", params).fetchall()  # noqa: S608
            incidents: dict[str, dict[str, int]] = {str(row[0]): {} for row in rows}
            for device_id, kind, total in connection.execute(
                    "SELECT device_id, kind, total FROM incidents WHERE device_id = ANY(%s)"
                    " ORDER BY device_id, kind", (list(incidents),)).fetchall():
                incidents[device_id][kind] = int(total)
        return [DeviceStatus(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]),
                             str(row[5]), incidents[str(row[0])], _device_update(row[6:]))
                for row in rows]

    def update_records(self, component: str, version: str) -> list[UpdateRecord]:
        if component not in _COMPONENTS:
            raise ValueError(f"unknown component {component!r}")
        with self._pool.connection() as connection:
            rows = connection.execute(
                "SELECT d.device_id, d.upd_state, d.upd_versions::json ->> %s,"
                " (SELECT MAX(f.received_at) FROM update_failures f WHERE"
                " f.device_id = d.device_id AND ((f.component = %s AND f.version = %s) OR"
                " (f.component = '' AND f.version = ''))) FROM devices d"
                " WHERE d.upd_seq IS NOT NULL ORDER BY d.device_id",
                (component, component, version)).fetchall()
        return [UpdateRecord(device_id, state, installed,
                             None if failed_at is None else int(failed_at))
                for device_id, state, installed, failed_at in rows]

    def fleet_status(self) -> FleetStatus:
        with self._pool.connection() as connection:
            row = connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(reports), 0),"
                " COALESCE(SUM(CASE WHEN health = 'degraded' THEN 1 ELSE 0 END), 0)"
                " FROM devices").fetchone()
            assert row is not None  # noqa: S101 - an aggregate always has a row
            incidents = {kind: int(total) for kind, total in sorted(connection.execute(
                "SELECT kind, SUM(total) AS n FROM incidents GROUP BY kind ORDER BY n DESC,"
                " kind LIMIT %s", (FLEET_INCIDENT_KINDS,)).fetchall())}
        return FleetStatus(int(row[0]), int(row[1]), int(row[2]), incidents)

    def signed_report(self, device_id: str, seq: int) -> bytes | None:
        """The exact signed bytes of a stored report (to verify again, to audit), or None."""
        with self._pool.connection() as connection:
            row = connection.execute(
                "SELECT signed_packed, pad_at, pad_len FROM reports WHERE device_id = %s"
                " AND seq = %s", (device_id, seq)).fetchone()
        return None if row is None else unpack_signed(bytes(row[0]), int(row[1]), int(row[2]))

    def reports(self, device_id: str | None = None, *, since: float = 0,
                limit: int = 100) -> list[StoredReport]:
        """Stored reports, newest first: one device's by sequence number, the fleet's by
        receive time (then device and sequence number); received at or after ``since``."""
        where = "received_at >= %s"
        args: list[object] = [since]
        if device_id is not None:
            where, order = where + " AND device_id = %s", "seq DESC"
            args.append(device_id)
        else:
            order = "received_at DESC, device_id DESC, seq DESC"
        with self._pool.connection() as connection:
            rows = connection.execute(
                # where/order are this method's constants; every value is a placeholder.
                "SELECT device_id, seq, report_time, received_at, mode, health, results,"  # noqa: S608
                f" incidents FROM reports WHERE {where} ORDER BY {order} LIMIT %s",
                (*args, max(0, limit))).fetchall()
        return [StoredReport(str(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4]), str(r[5]),
                             json.loads(r[6]), json.loads(r[7])) for r in rows]

    def count_reports(self, device_id: str) -> int:
        """Rows in the reports table for the device (tests and audits compare it with status)."""
        with self._pool.connection() as connection:
            row = connection.execute("SELECT COUNT(*) FROM reports WHERE device_id = %s",
                                     (device_id,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._pool.close()


def _insert(cursor: psycopg.Cursor[Any], columns: _Columns,
            rows: Sequence[tuple[object, ...]]) -> None:
    """Insert (or upsert) rows in one statement: one array per column."""
    if rows:
        cursor.execute(_INSERTS[columns.table],
                       [list(column) for column in zip(*rows, strict=True)])


__all__ = ["DEFAULT_POOL_SIZE", "DatabaseUnavailable", "PostgresStore", "parse_url"]
