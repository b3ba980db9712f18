"""`tinyward rollout …`: staged rollouts of signed update targets, with automatic halt.

Thin: the rule is :mod:`tinyward.fleet.rollout`, the records :mod:`tinyward.fleet.rollouts`.
Every change is written to the fleet's audit log (``FLEET_DIR/audit.log``, address
``cli``), as the admin API's changes are. A running server sees a change at once (it
re-reads ``FLEET_DIR/updates/rollouts.json`` when it changes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tinyward.fleet.pki import Fleet
    from tinyward.fleet.rollout import Rollout
    from tinyward.fleet.rollouts import RolloutBook

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []

_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_PERCENT = click.FloatRange(0, 100, min_open=True)


def _book(fleet_dir: Path) -> tuple[Fleet, RolloutBook]:  # imports late: the fleet extra
    from tinyward.fleet.guards import AuditLog
    from tinyward.fleet.pki import Fleet
    from tinyward.fleet.rollouts import RolloutBook
    from tinyward.fleet.server import AUDIT_LOG_FILE

    opened = Fleet.open(fleet_dir)  # refuses a folder that is not a fleet
    audit = AuditLog(opened.directory / AUDIT_LOG_FILE)

    def record(action: str, rollout_id: str, outcome: str) -> None:
        audit.record(address="cli", method=action.upper(), path=f"/v1/rollouts/{rollout_id}",
                     status=200, outcome=outcome)

    return opened, RolloutBook(opened.directory, audit=record)


def _describe(rollout: Rollout) -> str:
    who = f"{rollout.percent:g} %" + (f" of cohorts {', '.join(rollout.cohorts)}"
                                      if rollout.cohorts else " of the fleet")
    state = f"HALTED ({rollout.why})" if rollout.halted else "running"
    return (f"rollout {rollout.rollout_id}: {rollout.component} {rollout.version} "
            f"({rollout.target_path}) to {who}, {state}; halts at {rollout.halt_at * 100:g} % "
            f"failed after {rollout.min_reports} outcomes")


@click.group("rollout")
def rollout() -> None:
    """Offer a signed update target to a growing share of the fleet; halt on failures.

    A device is in a rollout if its cohort is one of the rollout's (when it names any)
    and its hash bucket is below the percentage: stable, and widening keeps the earlier
    devices. The rollout halts by itself when failed / (failed + updated) devices
    reaches --halt-at, once --min-reports devices have an outcome.
    """


@rollout.command("start")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("target")
@click.option("--percent", type=_PERCENT, default=None,
              help="Share of the (cohorts') devices to offer it to [default: 100 with "
              "--cohort; required without].")
@click.option("--cohort", "cohorts", multiple=True, metavar="NAME",
              help="Only devices of this cohort (repeat for several).")
@click.option("--halt-at", type=click.FloatRange(0, 1, min_open=True), default=0.1,
              show_default=True, help="Halt when this share of the devices with an outcome "
              "failed or reverted.")
@click.option("--min-reports", type=click.IntRange(1, 1_000_000), default=5, show_default=True,
              help="Devices with an outcome before the halt rule decides.")
@click.option("--component", default=None, help="The target's component (read from the "
              "fleet's repository when it has the target).")
@click.option("--version", "version", default=None, help="The target's version (likewise).")
def start(fleet_dir: Path, target: str, percent: float | None, cohorts: tuple[str, ...],
          halt_at: float, min_reports: int, component: str | None, version: str | None) -> None:
    """Start offering TARGET (its path in the fleet's update repository)."""
    from tinyward.fleet.errors import BadRollout
    from tinyward.fleet.rollouts import published_target

    _, book = _book(fleet_dir)
    published = published_target(fleet_dir, target)
    if published is not None:
        for given, found, what in ((component, published[0], "component"),
                                   (version, published[1], "version")):
            if given is not None and given != found:
                raise BadRollout(f"the repository says target {target!r} is {what} {found}, "
                                 f"not {given}")
        component, version = published
    elif component is None or version is None:
        raise BadRollout("the fleet has no update repository yet: give --component and "
                         "--version (devices still verify the target through TUF)")
    made = book.start(component, version, target, percent=percent, cohorts=cohorts,
                      halt_at=halt_at, min_reports=min_reports)
    click.echo(f"started {_describe(made)}")


@rollout.command("widen")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("rollout_id")
@click.option("--percent", type=_PERCENT, required=True, help="The new, larger share.")
def widen(fleet_dir: Path, rollout_id: str, percent: float) -> None:
    """Widen ROLLOUT_ID to a larger share (its current devices stay in)."""
    _, book = _book(fleet_dir)
    click.echo(f"widened {_describe(book.widen(rollout_id, percent))}")


@rollout.command("halt")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("rollout_id")
@click.option("--reason", default="halted by an operator", show_default=True)
def halt(fleet_dir: Path, rollout_id: str, reason: str) -> None:
    """Stop offering ROLLOUT_ID's target to anyone."""
    _, book = _book(fleet_dir)
    click.echo(_describe(book.halt(rollout_id, f"operator: {reason[:160]}")))


@rollout.command("resume")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("rollout_id")
def resume(fleet_dir: Path, rollout_id: str) -> None:
    """Offer a halted rollout's target again; failures reported before now stop counting."""
    _, book = _book(fleet_dir)
    click.echo(f"resumed {_describe(book.resume(rollout_id))}")


@rollout.command("status")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("rollout_id", required=False)
@click.option("--db", "db_url", default=None,
              help="Database URL of the fleet server [default: sqlite:///FLEET_DIR/reports.db].")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (as the admin API).")
def status(fleet_dir: Path, rollout_id: str | None, db_url: str | None, as_json: bool) -> None:
    """Each rollout (or ROLLOUT_ID): members by outcome and by update state, halted or not."""
    from tinyward.fleet.store import open_store

    opened, book = _book(fleet_dir)
    store = open_store(db_url or f"sqlite:///{(fleet_dir / 'reports.db').absolute()}")
    try:
        enrolled = [(d.device_id, d.cohort, d.revoked) for d in opened.devices()]
        found = book.status(store, enrolled, rollout_id)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"rollouts": [s.to_json() for s in found]}, indent=1))
        return
    if not found:
        click.echo("no rollouts (tinyward rollout start FLEET_DIR TARGET --percent P)")
    for item in found:
        counted = item.counted
        click.echo(_describe(item.rollout))
        click.echo(f"  members {counted.members}: "
                   + ", ".join(f"{k} {v}" for k, v in counted.outcomes.items())
                   + f"; failed share {counted.failure_share:.0%} of {counted.decided}"
                   + ("; complete" if item.to_json()["complete"] else ""))
        if counted.states:
            click.echo("  states: " + ", ".join(f"{k} {v}" for k, v in counted.states.items()))


COMMANDS.append(rollout)
