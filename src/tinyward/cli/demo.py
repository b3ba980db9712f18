"""`tinyward demo`: a fleet, its server, three sensors, and live attacks, in a live view.

The work is done by :mod:`tinyward.lab.demo`; this module only renders its state.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from tinyward.assess.attacks.outcome import Outcome
from tinyward.cli._paths import new_folder
from tinyward.cli.device_run import bench_shaping
from tinyward.lab.demo import Demo, DemoState, DeviceView, make_folder

# The view is made for a terminal of 80 x 24: the story is printed line by line as it
# happens (so it reads in order and scrolls), a few live status lines sit under it, and
# the run ends with one screen that holds every attack, what it met in plain words, and
# the result.
_NAME_WIDTH = 36
_MAX_DEVICE_LINES = 5


def _mark(outcome: Outcome) -> Text:
    return Text("✓", "bold green") if outcome.refused else Text("✗", "bold red")


def _reason(outcome: Outcome) -> Text:
    words = outcome.reason or outcome.detail
    if outcome.refused:
        return Text(words)
    return Text(f"NOT {outcome.label.upper()}: {words}", "bold red")


def _hanging(mark: Text, *lines: RenderableType) -> Table:
    """``mark`` in a narrow column, the text beside it (wrapped lines stay indented)."""
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(width=1, no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(mark, lines[0])
    for line in lines[1:]:
        grid.add_row("", line)
    return grid


def _story_lines(outcome: Outcome) -> Table:
    """An attack as it happens: its name and why, then the whole detail."""
    head = Text.assemble((outcome.attack, "bold"), " — ", _reason(outcome))
    return _hanging(_mark(outcome), head, Padding(Text(outcome.detail, "dim"), (0, 0, 0, 2)))


def _status(state: DemoState) -> Group:
    """The few live lines under the story: the phase and each device's counters."""
    lines: list[Text] = [Text.assemble(("▶ ", "yellow"), state.phase)]
    if state.running_attack:
        lines.append(Text.assemble(("  attacking: ", "yellow"), state.running_attack))
    views = state.devices
    if len(views) > _MAX_DEVICE_LINES:
        made = sum(int(v.status.get("generated", 0)) for v in views)
        stored = sum(v.stored for v in views)
        lines.append(Text(f"  {len(views)} devices: {made} reports made, {stored} stored"))
    else:
        for view in views:
            s = view.status
            lines.append(Text(f"  {view.name}: made {s.get('generated', 0)}, acked "
                              f"{s.get('acknowledged_seq', 0)}, queued {s.get('queued', 0)}, "
                              f"stored in the fleet {view.stored} ({s.get('state', 'starting')})"))
    return Group(*lines)


class _Story:
    """Prints what is new in the state since the last call: notes, then attacks."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.notes = self.attacks = 0
        self.network = False

    def __call__(self, state: DemoState) -> None:
        if state.network and not self.network:
            self.network = True
            self.console.print(_hanging(Text("·"), Text(state.network, "dim")))
        for note in state.log[self.notes:]:
            self.console.print(_hanging(Text("·"), Text(note)))
        self.notes = len(state.log)
        for outcome in state.attacks[self.attacks:]:
            self.console.print(_story_lines(outcome))
        self.attacks = len(state.attacks)


def _final(state: DemoState) -> tuple[Group, bool]:
    """The last screen: every attack and check with its reason, then the result."""
    attempted = [o for o in state.attacks if o.label == "refused"]
    checks = [o for o in state.attacks if o.label != "refused"]
    refused = sum(o.refused for o in attempted)
    verified = sum(o.refused for o in checks)
    table = Table(box=None, padding=(0, 1, 0, 0), show_edge=False, pad_edge=False,
                  title="what each attack met (✓ refused; for a check: verified)",
                  title_justify="left", title_style="bold")
    table.add_column("", width=1, no_wrap=True)
    table.add_column("attack", width=_NAME_WIDTH, no_wrap=True, overflow="ellipsis")
    table.add_column("why, in plain words", ratio=1, overflow="fold")
    for outcome in state.attacks:
        table.add_row(_mark(outcome), outcome.attack, _reason(outcome))
    stored = ", ".join(f"{v.name} {v.stored}" for v in state.devices)
    dropped = sum(int(v.status.get("dropped_reports", 0)) for v in state.devices)
    ok = (refused == len(attempted) and len(attempted) > 0 and verified == len(checks)
          and all(v.stored > 0 for v in state.devices))
    result = Text(f"attacks refused: {refused} of {len(attempted)}; checks verified: "
                  f"{verified} of {len(checks)}", "bold green" if ok else "bold red")
    return Group(Text(""), table, Text(""),
                 Text(f"reports stored: {stored}; dropped: {dropped}"), result), ok


def state_to_json(state: DemoState) -> str:
    """A finished run's state (``--record``): the view can be replayed from it."""
    document = dataclasses.asdict(state)
    document["folder"] = str(state.folder)
    return json.dumps(document, indent=1)


def state_from_json(text: str) -> DemoState:
    document = json.loads(text)
    return DemoState(
        folder=Path(document["folder"]), phase=document["phase"],
        server_url=document["server_url"], network=document["network"],
        devices=[DeviceView(**view) for view in document["devices"]],
        attacks=[Outcome(**outcome) for outcome in document["attacks"]],
        running_attack=document["running_attack"], log=list(document["log"]))


def replay(path: Path, console: Console | None = None) -> bool:
    """Print a recorded run as ``tinyward demo`` printed it (for the 80 x 24 test)."""
    console = console or Console()
    state = state_from_json(Path(path).read_text())
    _Story(console)(state)
    final, ok = _final(state)
    console.print(final)
    return ok


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
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path), default=None,
              hidden=True, help="Write the final state as JSON (tests replay the view).")
def demo(count: int, duration: float, interval: float, keep: Path | None,
         no_netns: bool, record: Path | None) -> None:
    """Create a fleet and its server, run sensors, attack them live, and summarise.

    Everything happens in a temporary folder (or --keep DIR) on this machine: the
    fleet server listens on a local address only; the sensors run in a private network
    namespace when tinyward runs as root.
    """
    console = Console()
    folder = make_folder(keep)
    ok = False
    console.print(Text.assemble(("tinyward demo", "bold"), f": a fleet, its server, {count} "
                                "sensors, and live attacks on them"))
    try:
        with Demo(folder, count, duration, interval, use_netns=not no_netns) as run:
            story = _Story(console)
            with Live(_status(run.state), console=console, refresh_per_second=4,
                      transient=True) as live:
                stop = threading.Event()

                def painter() -> None:
                    while not stop.is_set():
                        run.refresh()
                        story(run.state)
                        live.update(_status(run.state))
                        stop.wait(0.5)

                paint = threading.Thread(target=painter, daemon=True)
                paint.start()
                try:
                    _script(run, duration)
                finally:
                    stop.set()
                    paint.join(timeout=2)
                    run.refresh()
                    story(run.state)
            state = run.state
        final, ok = _final(state)
        console.print(final)
        if record is not None:
            record.write_text(state_to_json(state))
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
            console.print(Text(f"{folder} removed (--keep DIR keeps everything)", "dim"))
        else:
            console.print(f"kept everything in {folder}")
    if not ok:
        raise SystemExit(1)


def _script(run: Demo, duration: float) -> None:
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
    run.state.phase = "signed updates: good, tampered, crashing (device-1)"
    run.run_update_steps()
    run.refresh()
    run.state.phase = "done"


COMMANDS: list[click.Command] = [demo]
BENCH_COMMANDS: list[click.Command] = [bench_shaping]
