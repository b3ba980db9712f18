"""`tinyward report verify`: check a signed report offline (e.g. scanned from a QR code)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tinyward.errors import BadInput
from tinyward.fleet.offline import verify_offline
from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import open_store
from tinyward.readout.carrier import MAX_TEXT_CHARS, from_text


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
def verify_command(file_or_text: str, fleet_dir: Path, db_url: str | None) -> None:
    """Verify a signed offline report and record it; exit 0 only when it is valid and new.

    FILE_OR_TEXT is the text from the readout's QR code (starting TW1:) or a file holding
    it. The report must be signed by a device of this fleet that is not revoked, and its
    sequence number must be newer than any the fleet holds for that device (a replayed
    QR code is refused).
    """
    text = file_or_text
    path = Path(file_or_text)
    if not file_or_text.startswith("TW1:") and path.is_file():
        with path.open("r", encoding="ascii", errors="replace") as handle:
            text = handle.read(MAX_TEXT_CHARS + 1)
    fleet = Fleet.open(fleet_dir)
    store = open_store(db_url or f"sqlite:///{(fleet_dir / 'reports.db').absolute()}")
    try:
        verified = verify_offline(fleet, from_text(text), store)
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


COMMANDS: list[click.Command] = [report]
