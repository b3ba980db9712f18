"""`tinyward demo`: a fleet, its server, three sensors, and live attacks, in a live view.

The work is done by :mod:`tinyward.lab.demo`; this module only renders its state.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tinyward.cli._paths import new_folder
from tinyward.cli.device_run import bench_shaping
from tinyward.lab.demo import Demo, DemoState, make_folder


def _view(state: DemoState) -> Group:
    header = Text.assemble(("tinyward demo", "bold"), f" — {state.phase}\n",
                           (f"{state.network}\n", "dim"), (f"folder: {state.folder}", "dim"))
    devices = Table(title="sensors (reports are signed, numbered, fixed-size, constant-rate)",
                    expand=True)
    for column in ("device", "ID", "made", "acked", "queued", "stored in fleet DB", "state"):
        devices.add_column(column)
    for view in state.devices:
        s = view.status
        devices.add_row(view.name, view.device_id[:16] + "…", str(s.get("generated", 0)),
                        str(s.get("acknowledged_seq", 0)), str(s.get("queued", 0)),
                        str(view.stored), str(s.get("state", "starting")))
    attacks = Table(title="live attacks", expand=True)
    attacks.add_column("attack")
    attacks.add_column("outcome", no_wrap=True)
    attacks.add_column("detail", overflow="fold")
    for outcome in state.attacks:
        attacks.add_row(outcome.attack,
                        Text(outcome.label, "bold green") if outcome.refused
                        else Text(f"NOT {outcome.label.upper()}", "bold red"), outcome.detail)
    if state.running_attack:
        attacks.add_row(state.running_attack, Text("running…", "yellow"), "")
    log = Text("\n".join(state.log), style="dim")
    return Group(Panel(header), devices, attacks, log)


@click.command("demo")
@click.option("--devices", "count", type=click.IntRange(2, 20), default=3, show_default=True,
              help="How many sensors to provision and run.")
@click.option("--duration", type=click.FloatRange(8, 3600), default=20.0, show_default=True,
              help="Seconds the sensors report for (the attacks run meanwhile).")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between a sensor's reports.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              callback=new_folder,
              help="Build everything in this (new or empty) folder and keep it afterwards.")
@click.option("--no-netns", is_flag=True, help="Run the sensors on loopback, not in a "
              "network namespace of their own.")
def demo(count: int, duration: float, interval: float, keep: Path | None,
         no_netns: bool) -> None:
    """Create a fleet and its server, run sensors, attack them live, and summarise.

    Everything happens in a temporary folder (or --keep DIR) on this machine: the
    fleet server listens on a local address only; the sensors run in a private network
    namespace when tinyward runs as root.
    """
    console = Console()
    folder = make_folder(keep)
    refused = total = 0
    try:
        with Demo(folder, count, duration, interval, use_netns=not no_netns) as run, \
                Live(_view(run.state), console=console, refresh_per_second=4) as live:
            stop = threading.Event()

            def painter() -> None:
                while not stop.is_set():
                    run.refresh()
                    live.update(_view(run.state))
                    stop.wait(0.5)

            paint = threading.Thread(target=painter, daemon=True)
            paint.start()
            try:
                run.setup()
                run.start_devices()
                # Let every sensor get a few reports stored before the attacks start.
                deadline = time.monotonic() + min(15.0, duration / 2)
                while time.monotonic() < deadline:
                    run.refresh()
                    if all(v.stored >= 2 for v in run.state.devices):
                        break
                    time.sleep(0.25)
                run.state.phase = "live attacks (the sensors keep reporting)"
                run.run_attacks()
                run.state.phase = "sensors finishing their run"
                run.wait_devices(duration + 30)
                run.state.phase = "man in the middle: device-1 pointed at impostors"
                run.run_mitm_attacks()
                run.refresh()
                run.state.phase = "done"
            finally:
                stop.set()
                paint.join(timeout=2)
                run.refresh()
                live.update(_view(run.state))
            state = run.state
        checks = [o for o in state.attacks if o.label != "refused"]
        attempted = [o for o in state.attacks if o.label == "refused"]
        total = len(attempted)
        refused = sum(o.refused for o in attempted)
        summary = Table(title="summary")
        summary.add_column("device")
        summary.add_column("reports stored", justify="right")
        summary.add_column("dropped", justify="right")
        for view in state.devices:
            summary.add_row(f"{view.name} {view.device_id[:16]}…", str(view.stored),
                            str(view.status.get("dropped_reports", 0)))
        console.print(summary)
        style = "bold green" if refused == total else "bold red"
        console.print(Text(f"attacks refused: {refused} of {total}", style))
        for check in checks:
            console.print(Text(f"{check.attack}: {'yes' if check.refused else 'NO'}",
                               "green" if check.refused else "bold red"))
        ok = (refused == total and total > 0 and all(c.refused for c in checks)
              and all(v.stored > 0 for v in state.devices))
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            console.print(f"kept everything in {folder}")
    if not ok:
        raise SystemExit(1)


COMMANDS: list[click.Command] = [demo]
BENCH_COMMANDS: list[click.Command] = [bench_shaping]
