"""``tinyward lab up|run|down``: the attack lab in network namespaces (root only).

The work is done by :mod:`tinyward.lab.testbed`; see docs/lab.md.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import click

from tinyward.errors import TinywardError
from tinyward.lab.testbed import net
from tinyward.lab.testbed.lab import Lab, state_path
from tinyward.lab.testbed.plan import DEFAULT_PREFIX, LabPlan, check_prefix, make_plan
from tinyward.lab.testbed.run import NO_DETECTION, Figures, RunResult, run_lab
from tinyward.lab.testbed.tools import ATTACK_CLASSES, PROFILES, missing_tools
from tinyward.lab.testbed.training import seconds_needed


class LabToolMissing(TinywardError):
    """A tool the lab runs is not installed (scripts/install-system-deps.sh installs it)."""


def _prefix(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    return check_prefix(value)


_PREFIX = click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, callback=_prefix,
                       help="Name prefix of the lab's namespaces (2-8 letters or digits).")


def _describe(plan: LabPlan) -> str:
    rows = [f"  {h.role:<13} {h.address:<12} netns {h.netns}" for h in plan.hosts]
    return "\n".join(rows)


@click.group("lab")
def lab() -> None:
    """An attack lab in network namespaces: a fleet server, devices, two attackers.

    Everything lives in namespaces named PREFIX-* with addresses in 10.203.0.0/16 and no
    link to this host's network; `lab down` removes all of it. Needs root.
    """


@lab.command("up")
@_PREFIX
@click.option("--devices", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--interval", type=click.FloatRange(1, 60), default=1.0, show_default=True,
              help="Seconds between a device's reports.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Keep the fleet, devices and logs here [default: a "
              "temporary folder, removed by `lab down`].")
@click.option("--no-detect", is_flag=True, help="Run the devices without on-device detection.")
@click.option("--train", type=click.FloatRange(5, 3600), default=300.0, show_default=True,
              help="With detection: seconds of device-1's traffic its model is trained on "
              "(as `lab run`'s default profile; shorter warns that the threshold cannot keep "
              "its rate).")
def up(prefix: str, devices: int, interval: float, folder: Path | None, no_detect: bool,
       train: float) -> None:
    """Bring the lab up and leave it running (`lab down` removes it)."""
    plan = make_plan(devices, prefix)
    missing = missing_tools(("dnsmasq", "tcpdump"))  # the resolver; the training capture
    if missing:
        raise LabToolMissing(f"missing tools: {', '.join(missing)} (run "
                             "scripts/install-system-deps.sh)")
    temporary = folder is None
    folder = Path(tempfile.mkdtemp(prefix=f"tinyward-{prefix}-")) if folder is None else folder
    run = Lab(plan, folder, interval=interval, detect=not no_detect, train_seconds=train)
    run.up()
    path = state_path(prefix)
    state = json.loads(path.read_text())
    state["temporary"] = temporary
    path.write_text(json.dumps(state))
    click.echo(f"lab '{prefix}' is up; fleet server {run.server_url}, admin {run.admin_url}")
    click.echo(_describe(plan))
    click.echo(f"detection: {run.detection or NO_DETECTION}; files in {folder}")
    _warn_training(run)
    click.echo(f"enter a host: ip netns exec {plan.host('attacker-lan').netns} bash")


@lab.command("down")
@_PREFIX
def down(prefix: str) -> None:
    """Remove the lab: its processes, namespaces, bridges and links."""
    path = state_path(prefix)
    state = json.loads(path.read_text()) if path.exists() else {}
    removed = net.remove_lab(prefix)
    path.unlink(missing_ok=True)
    if state.get("temporary") and state.get("folder"):
        shutil.rmtree(state["folder"], ignore_errors=True)
    left = net.lab_namespaces(prefix)
    if left:
        raise TinywardError(f"namespaces left behind: {', '.join(left)}")
    click.echo(f"removed {len(removed)} namespaces ({', '.join(removed) or 'none'}); "
               "nothing of the lab is left")


@lab.command("run")
@_PREFIX
@click.option("--quick", is_flag=True, help="The short profile (under ~90 s, for tests).")
@click.option("--devices", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where captures, labels and figures go [default: ./lab-run-TIME].")
@click.option("--attack", "attacks", type=click.Choice(ATTACK_CLASSES), multiple=True,
              help="Run only these attack classes (repeatable) [default: all].")
@click.option("--no-detect", is_flag=True, help="Run the devices without on-device detection.")
@click.option("--benign-minutes", type=click.FloatRange(0.1, 240), default=None,
              help="Minutes of benign traffic before the first attack, where false alarms "
              "are counted [default: 5; quick: 10 s].")
@click.option("--train-seconds", type=click.FloatRange(5, 3600), default=None,
              help="With detection: seconds of device-1's benign traffic its model is "
              "trained on [default: 300; quick: 12 s].")
def run(prefix: str, quick: bool, devices: int, out: Path | None, attacks: tuple[str, ...],
        no_detect: bool, benign_minutes: float | None, train_seconds: float | None) -> None:
    """Bring a lab up, run benign traffic and every attack, capture, label, take it down.

    Prints per attack class the detection delay (attack start to the first incident a
    device reported to the fleet) and the false alarms per hour of the benign period.
    """
    missing = missing_tools()
    if missing:
        raise LabToolMissing(f"missing tools: {', '.join(missing)} (run "
                             "scripts/install-system-deps.sh)")
    profile = PROFILES["quick" if quick else "default"]
    if benign_minutes is not None:
        profile = dataclasses.replace(profile, benign=benign_minutes * 60)
    if train_seconds is not None:
        profile = dataclasses.replace(profile, train=train_seconds)
    out = Path(f"lab-run-{time.strftime('%Y%m%d-%H%M%S')}") if out is None else out
    folder = Path(tempfile.mkdtemp(prefix=f"tinyward-{prefix}-"))
    began = time.monotonic()
    try:
        with Lab(make_plan(devices, prefix), folder, detect=not no_detect,
                 train_seconds=profile.train) as testbed:
            click.echo(f"lab '{prefix}' coming up (profile {profile.name})")
            testbed.up()
            click.echo(_describe(testbed.plan))
            _warn_training(testbed)
            result = run_lab(testbed, profile, out, attacks or ATTACK_CLASSES, log=click.echo)
            shutil.copytree(folder / "logs", out / "logs", dirs_exist_ok=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _print_result(result)
    _warn_training(testbed)  # again, next to the figures it weakens
    click.echo(f"lab removed; {time.monotonic() - began:.0f} s in all; results in {out}")


def _warn_training(testbed: Lab) -> None:
    """Say loudly (on stderr) when the device's model was trained on too little traffic
    for its false-positive rate (the model file's calibration warnings)."""
    notes = testbed.train_warnings
    if not notes:
        return
    need = seconds_needed(notes, testbed.train_seconds)
    click.secho(f"WARNING: {testbed.train_seconds:g} s of training is too short for the "
                "device model's false-positive rate; its false alarms may exceed it"
                + (f" (this traffic needs about --train-seconds {need:g})" if need else ""),
                fg="red", bold=True, err=True)
    for note in notes:
        click.secho(f"WARNING: {note}", fg="red", err=True)


def _print_result(result: RunResult) -> None:
    figures = result.figures
    click.echo("")
    for name, path in result.captures.items():
        click.echo(f"capture {path} with labels {result.labels[name]} "
                   f"(`tinyward detect eval --model MODEL --capture {path} --labels "
                   f"{result.labels[name]} --out DIR`)")
    if figures.detection is None:
        click.echo(f"{NO_DETECTION}: no detection delays (the labelled captures are made)")
        return
    click.echo(f"detection delay per attack class (device flag {figures.detection}; the "
               "fleet's receive time, 1 s resolution):")
    for attack, delay in figures.delays.items():
        if not figures.visible.get(attack, True):
            seen = figures.window_incidents.get(attack, 0)
            click.echo(f"  {attack:<13} fleet-side: {_refused(figures, attack)}"
                       + (f"; the device reported {seen} incidents meanwhile (its own uplink "
                          "to the loaded fleet changed: not a detection of this attack)"
                          if seen else ""))
            continue
        notes = []
        if delay is not None and figures.carried.get(attack):
            notes.append("the device was still reporting the previous attack when it began")
        kinds = ", ".join(figures.delay_kinds.get(attack, []))
        click.echo(f"  {attack:<13} " + (f"{delay:5.1f} s ({kinds})" if delay is not None
                                          else "not detected")
                   + (f"  ({'; '.join(notes)})" if notes else ""))
    interval = figures.false_alarms_interval
    bound = (f" (95 % interval {interval[0]:.1f}-{interval[1]:.1f})" if interval else "")
    click.echo(f"false alarms: {figures.benign_incidents} incidents in "
               f"{figures.benign_seconds / 60:.1f} min of benign traffic = "
               f"{figures.false_alarms_per_hour:.1f} per hour{bound}")
    if figures.benign_seconds < 120:
        click.echo("  (the quick profile is for wiring only: too short a benign period and "
                   "too short a training for figures; use the default profile)")


def _refused(figures: Figures, attack: str) -> str:
    """What the fleet refused during a fleet-side attack (its /metrics), or why unknown."""
    if attack == "hydra":
        where = "the router's login (never on the device's wire) and the dashboard login"
    else:
        where = "not on the device's wire"
    refused = figures.fleet_refusals.get(attack)
    if refused is None:
        return f"{where}; no fleet evidence (its /metrics could not be read)"
    if not refused:
        return f"{where}; the fleet counted no refusal in its window"
    return ("refused by the fleet: " + ", ".join(f"{int(n)} {reason}" for reason, n in
                                                  sorted(refused.items(), key=lambda i: -i[1]))
            + f" ({where})")


COMMANDS: list[click.Command] = [lab]
