"""`tinyward report verify`: check a signed report offline (e.g. scanned from a QR code)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from tinyward.errors import BadInput
from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import open_store
from tinyward.readout.offline import MAX_TEXT_CHARS, from_text, verify_offline


@click.group()
def report() -> None:
    """Signed device reports."""


@report.command("verify")
@click.argument("file_or_text")
@click.option("--fleet", "fleet_dir", required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="The fleet whose devices you trust.")
@click.option("--db", "db_url", default=None,
              help="The fleet's report database [default: sqlite:///FLEET_DIR/reports.db].")
@click.option("--allow-old", is_flag=True,
              help="Accept a report older than the fleet's age limit (30 days), e.g. one "
                   "kept for months; future-dated reports are still refused.")
@click.option("--at", "at", default=None, metavar="TIME",
              help="Check the report's date and certificate as at TIME (ISO 8601, UTC if no "
                   "zone, or Unix seconds) instead of now.")
def verify_command(file_or_text: str, fleet_dir: Path, db_url: str | None,
                   allow_old: bool, at: str | None) -> None:
    """Verify a signed offline report and record it; exit 0 only when it is valid and new.

    FILE_OR_TEXT is the text from the readout's QR code (starting TW1:) or a file holding
    it. The report must be signed by a device of this fleet that is not revoked, and its
    sequence number must be newer than any the fleet holds for that device (a replayed
    QR code is refused). Its date must be in the window connected reports get (at most 5
    minutes ahead, at most 30 days old) unless --allow-old or --at says otherwise.
    """
    when = _parse_time(at) if at is not None else None
    text = file_or_text
    path = Path(file_or_text)
    if not file_or_text.startswith("TW1:") and path.is_file():
        with path.open("r", encoding="ascii", errors="replace") as handle:
            text = handle.read(MAX_TEXT_CHARS + 1)
    fleet = Fleet.open(fleet_dir)
    store = open_store(db_url or f"sqlite:///{(fleet_dir / 'reports.db').absolute()}")
    try:
        verified = verify_offline(fleet, from_text(text), store, when, allow_old=allow_old)
    except BadInput as error:
        click.secho(f"report refused: {error}", fg="red", err=True)
        sys.exit(error.exit_code)
    finally:
        store.close()
    click.echo(json.dumps({
        "valid": True, "device_id": verified.device_id, "seq": verified.seq,
        "time": verified.timestamp, "mode": verified.mode, "health": verified.health,
        "results": [dict(r) for r in verified.results], "incidents": dict(verified.incidents),
    }, indent=2))


def _parse_time(text: str) -> datetime:
    try:
        if text.strip().lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        when = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time or Unix seconds",
                                 param_hint="--at") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


COMMANDS: list[click.Command] = [report]
