"""`tinyward report verify`: check a signed report offline (e.g. scanned from a QR code)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from tinyward.errors import BadInput
from tinyward.fleet.offline import verify_offline
from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import open_store
from tinyward.readout.carrier import MAX_TEXT_CHARS, TEXT_PREFIX, from_text
from tinyward.trust.report import Report


@click.group()
def report() -> None:
    """Signed device reports."""


@report.command("verify")
@click.argument("files_or_texts", metavar="FILE_OR_TEXT...", nargs=-1, required=True)
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
def verify_command(files_or_texts: tuple[str, ...], fleet_dir: Path, db_url: str | None,
                   allow_old: bool, at: str | None) -> None:
    """Verify signed offline reports and record them; exit 0 only when all are valid and new.

    Each FILE_OR_TEXT is the text from the readout's QR code (starting TW1:) or a file
    holding it (several at once: `report-*.txt`). A report must be signed by a device of
    this fleet that is not revoked, and its sequence number must be newer than any the
    fleet holds for that device (a replayed QR code is refused). Its date must be in the
    window connected reports get (at most 5 minutes ahead, at most 30 days old) unless
    --allow-old or --at says otherwise. Each valid report is printed as JSON (a list when
    there are several); each refused one as an `error:` line.
    """
    when = _parse_time(at) if at is not None else None
    fleet = Fleet.open(fleet_dir)
    store = open_store(db_url or f"sqlite:///{(fleet_dir / 'reports.db').absolute()}")
    verified: list[dict[str, object]] = []
    first_refusal: BadInput | None = None
    try:
        for item in files_or_texts:
            try:
                report = verify_offline(fleet, from_text(_read(item)), store, when,
                                        allow_old=allow_old)
            except BadInput as error:
                where = "" if item.startswith(TEXT_PREFIX) else f"{item}: "
                click.secho(f"error: {where}report refused: {error}", fg="red", err=True)
                first_refusal = first_refusal or error
                continue
            verified.append(_as_json(report))
    finally:
        store.close()
    if verified:
        click.echo(json.dumps(verified[0] if len(files_or_texts) == 1 else verified, indent=2))
    if first_refusal is not None:
        sys.exit(first_refusal.exit_code)


class ReportFileError(BadInput):
    """A report file named on the command line cannot be read."""


def _read(item: str) -> str:
    """The report text: ``item`` itself (``TW1:…``) or the content of the file it names."""
    if item.startswith(TEXT_PREFIX):
        return item
    path = Path(item)
    try:
        with path.open("r", encoding="ascii", errors="replace") as handle:
            return handle.read(MAX_TEXT_CHARS + 1)
    except FileNotFoundError:
        raise ReportFileError(f"file not found (and not a report text starting "
                              f"{TEXT_PREFIX})") from None
    except IsADirectoryError:
        raise ReportFileError("a folder, not a report file") from None
    except OSError as error:
        raise ReportFileError(f"cannot read it: {error.strerror}") from None


def _as_json(report: Report) -> dict[str, object]:
    document: dict[str, object] = {
        "valid": True, "device_id": report.device_id, "seq": report.seq,
        "time": report.timestamp, "mode": report.mode, "health": report.health,
        "results": [dict(r) for r in report.results], "incidents": dict(report.incidents),
    }
    if report.update is not None:  # only reports that carry one (docs/reports.md)
        update = report.update
        document["update"] = {"state": update.state, "versions": dict(update.versions),
                              "why": update.why,
                              "target": list(update.target) if update.target else None}
    return document


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
