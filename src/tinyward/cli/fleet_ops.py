"""`tinyward fleet reports|incidents|devices`: what the fleet knows, for an operator.

They read the fleet's records (FLEET_DIR) and its report database (``--db``, default
``sqlite:///FLEET_DIR/reports.db``) directly, not the admin API: they work while the
server is down (when an operator most needs to look), need no admin token on a command
line or in a shell history, and an operator who can read FLEET_DIR can read the database
anyway. SQLite in WAL mode lets them read while the server writes. A missing database is
a fleet that has stored nothing yet (nothing is created).

Readable tables by default; ``--json`` prints one JSON document for scripts (times as
Unix seconds, full device IDs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tinyward.errors import BadInput

_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_DB = click.option("--db", "db_url", default=None,
                   help="Report database URL [default: sqlite:///FLEET_DIR/reports.db].")
_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON document (scripts).")
_DEVICE = click.option("--device", "device", default=None, metavar="ID",
                       help="Only this device (its full ID, or a unique prefix).")
_SINCE = click.option("--since", default=None, metavar="WHEN",
                      help="Only since WHEN: an age (90s, 15m, 2h, 7d), Unix seconds or an "
                      "ISO 8601 time.")


class BadSince(BadInput):
    """A --since that is neither an age, Unix seconds nor an ISO time."""


class UnknownPrefix(BadInput):
    """A --device prefix that names no enrolled device, or several."""


def parse_since(text: str | None, now: float) -> float:
    """Unix seconds from ``--since`` (0: no bound)."""
    if not text:
        return 0.0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadSince(f"--since {text!r}: give an age (90s, 15m, 2h, 7d), Unix seconds or "
                       "an ISO 8601 time") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def age(seconds: float | None) -> str:
    """'42 s ago', '3 min ago', '5 h ago', '2 d ago' ('never' for None)."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds / 86400:.0f} d ago"


def _iso(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextmanager
def _store(fleet_dir: Path, db_url: str | None) -> Iterator[Any]:
    """The report store, or None when the default database does not exist yet."""
    from tinyward.fleet.store import open_store

    if db_url is None and not (fleet_dir / "reports.db").exists():
        yield None
        return
    store = open_store(db_url or f"sqlite:///{(fleet_dir / 'reports.db').absolute()}")
    try:
        yield store
    finally:
        store.close()


def _resolve(fleet_dir: Path, device: str | None) -> str | None:
    if device is None:
        return None
    from tinyward.fleet.pki import Fleet

    ids = [p.name for p in Fleet.open(fleet_dir).devices_path.iterdir()
           if p.name.startswith(device.lower())]
    if len(ids) != 1:
        raise UnknownPrefix(f"--device {device}: " + ("no enrolled device has this ID"
                            if not ids else f"{len(ids)} devices start with it; give more"))
    return ids[0]


def _print(table: Table) -> None:
    console = Console()
    if not console.is_terminal:
        console.width = 240  # never cut device IDs or evidence in a pipe
    console.print(table)


@click.command("reports")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_DB
@_DEVICE
@_SINCE
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@_JSON
def reports(fleet_dir: Path, db_url: str | None, device: str | None, since: str | None,
            limit: int, as_json: bool) -> None:
    """The latest stored reports, newest first (what each device told the fleet)."""
    device_id = _resolve(fleet_dir, device)
    bound = parse_since(since, time.time())
    with _store(fleet_dir, db_url) as store:
        found = [] if store is None else store.reports(device_id, since=bound, limit=limit)
    if as_json:
        click.echo(json.dumps({"reports": [asdict(r) for r in found]}, indent=1))
        return
    table = Table(title=f"{len(found)} reports (newest first)")
    for column in ("device", "seq", "device time", "received", "mode", "health",
                   "incidents", "results"):
        table.add_column(column, no_wrap=column != "results")
    for report in found:
        table.add_row(report.device_id[:12], str(report.seq), _iso(report.report_time),
                      _iso(report.received_at), report.mode, report.health,
                      " ".join(f"{k}×{v}" for k, v in report.incidents.items()) or "-",
                      str(len(report.results)))
    _print(table)


@click.command("incidents")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_DB
@_DEVICE
@click.option("--kind", default=None, help="Only this incident kind (e.g. quiet, net.anomaly).")
@_SINCE
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@_JSON
def incidents(fleet_dir: Path, db_url: str | None, device: str | None, kind: str | None,
              since: str | None, limit: int, as_json: bool) -> None:
    """Incidents, newest first: those devices reported and those the fleet raised
    (``quiet``: a device that missed its schedule)."""
    device_id = _resolve(fleet_dir, device)
    bound = int(parse_since(since, time.time()))
    with _store(fleet_dir, db_url) as store:
        found = [] if store is None else store.incidents(device_id, since=bound, kind=kind,
                                                          limit=limit)
    if as_json:
        click.echo(json.dumps({"incidents": [asdict(i) for i in found]}, indent=1))
        return
    now = time.time()
    table = Table(title=f"{len(found)} incidents (newest first)")
    for column in ("when", "device", "kind", "count", "seq", "evidence"):
        table.add_column(column, no_wrap=column != "evidence")
    for incident in found:
        table.add_row(age(now - incident.at), incident.device_id[:12], incident.kind,
                      str(incident.count), "-" if incident.seq is None else str(incident.seq),
                      incident.evidence)
    _print(table)


def device_rows(fleet_dir: Path, db_url: str | None, now: float) -> list[dict[str, Any]]:
    """One dict per enrolled device: records, state (fleet/devstate.py) and its reports."""
    from tinyward.fleet.devstate import device_state
    from tinyward.fleet.pki import Fleet

    fleet = Fleet.open(fleet_dir)
    rows = []
    with _store(fleet_dir, db_url) as store:
        for device in fleet.devices():
            status = store.device_status(device.device_id) if store is not None else None
            quarantined = device.quarantined
            update = status.update if status is not None else None
            rows.append({
                "device_id": device.device_id,
                "enrolled_at": device.enrolled_at.timestamp(),
                "report_interval": device.report_interval,
                "revoked": device.revoked,
                "revoked_at": device.revoked_at.timestamp() if device.revoked_at else None,
                "quarantined": quarantined,
                "cohort": device.cohort,
                "state": device_state(status, revoked=device.revoked, quarantined=quarantined,
                                      now=now, interval=device.report_interval),
                "last_received_at": status.last_received_at if status else None,
                "last_seq": status.last_seq if status else 0,
                "reports": status.reports if status else 0,
                "health": status.health if status else None,
                "incidents": dict(status.incidents) if status else {},
                "update": None if update is None else {
                    "state": update.state, "why": update.why,
                    "versions": dict(update.versions)},
            })
    return rows


@click.command("devices")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_DB
@click.option("--state", "states", multiple=True,
              type=click.Choice(("never", "ok", "degraded", "quiet", "quarantined", "revoked")),
              help="Only devices in this state (repeatable).")
@_JSON
def devices(fleet_dir: Path, db_url: str | None, states: tuple[str, ...],
            as_json: bool) -> None:
    """The devices enrolled in FLEET_DIR, revoked ones included: cohort, update state and
    installed versions (from its latest report that had them), state (ok, degraded,
    quiet: it missed its schedule, never, quarantined, revoked), last seen, incidents."""
    from tinyward.fleet.pki import Fleet

    now = time.time()
    rows = [r for r in device_rows(fleet_dir, db_url, now) if not states or r["state"] in states]
    if as_json:
        click.echo(json.dumps({"devices": rows}, indent=1))
        return
    table = Table(title=f"fleet {Fleet.open(fleet_dir).fleet_id}")
    # The first seven columns as before (scripts and tests read them by position).
    for column in ("device ID", "enrolled", "report interval", "revoked", "cohort", "update",
                   "versions", "state", "last seen", "incidents"):
        table.add_column(column, no_wrap=column != "incidents")
    for row in rows:
        interval = (f"{row['report_interval']:g} s" if row["report_interval"] is not None
                    else "none (server fallback)")
        update = row["update"]
        state, versions = "-", "-"
        if update is not None:
            state = update["state"] + (f" ({update['why']})" if update["why"] else "")
            versions = " ".join(f"{c} {v}" for c, v in update["versions"].items()) or "-"
        revoked = "no"
        if row["revoked"]:
            revoked = f"yes, {_iso(row['revoked_at'])}" if row["revoked_at"] else "yes"
        seen = None if row["last_received_at"] is None else now - row["last_received_at"]
        table.add_row(row["device_id"], _iso(row["enrolled_at"]), interval, revoked,
                      row["cohort"] or "-", state, versions, row["state"], age(seen),
                      " ".join(f"{k}×{v}" for k, v in row["incidents"].items()) or "-")
    _print(table)
