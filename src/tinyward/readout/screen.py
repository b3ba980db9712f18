"""The terminal stand-in for the e-ink display: locked until the reader authenticates.

What it shows while locked: the device's short ID, the word LOCKED, and how long the
lockout wait is — never a result. After a correct code (TOTP or PIN, checked by
:class:`tinyward.trust.readout.ReadoutGate`, with the persistent lockout) it shows the
newest results, incidents and health, and can show a signed report as a QR code. It locks
itself again after ``idle_lock`` seconds without a key, or on ``l``.

The screen process forbids itself the network first (:func:`tinyward.trust.airgap.forbid_network`):
a display has no business with sockets. Codes are read without echo and never logged.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tinyward._fsutil import atomic_write, make_private_dir
from tinyward.readout import state as display
from tinyward.readout.offline import make_offline_report, to_text
from tinyward.readout.qr import terminal_lines
from tinyward.trust.airgap import forbid_network
from tinyward.trust.device import Device
from tinyward.trust.lockout import LockedOut
from tinyward.trust.readout import NoCredential, ReadoutGate, WrongCode


class LineInput:
    """Reads one line from a stream, without echo when it is a terminal, with a timeout."""

    def __init__(self, stream: TextIO = sys.stdin) -> None:
        self._stream = stream

    def read(self, timeout: float | None, secret: bool) -> str | None:
        """A line without its newline; ``""`` on timeout; ``None`` at end of input."""
        fd = self._stream.fileno()
        is_tty = os.isatty(fd)
        old = termios.tcgetattr(fd) if (secret and is_tty) else None
        if old is not None:
            new = termios.tcgetattr(fd)
            new[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSADRAIN, new)
        try:
            if timeout is not None:
                ready, _, _ = select.select([self._stream], [], [], timeout)
                if not ready:
                    return ""
            line = self._stream.readline()
        finally:
            if old is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, old)
                sys.stdout.write("\n")
        if line == "":
            return None
        return line.rstrip("\r\n")


def _plain(value: object) -> Text:
    """A value from a result (the app chose it) as plain text: no rich markup (``[/b]``
    would raise, ``[red]`` would style), and every non-printable character escaped (a
    terminal escape would let the app draw on the screen)."""
    text = str(value)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return Text(text)


class ReadoutScreen:
    """The readout's screens and its small command loop."""

    def __init__(
        self,
        device: Device,
        console: Console | None = None,
        line_input: LineInput | None = None,
        clock: Callable[[], float] = time.time,
        idle_lock: float = 60.0,
        export_dir: Path | None = None,
    ) -> None:
        self.device = device
        self.console = console or Console()
        self.input = line_input or LineInput()
        self.clock = clock
        self.idle_lock = idle_lock
        self.export_dir = export_dir or device.directory / "readout-reports"
        self.gate = ReadoutGate(device.storage, f"device-{device.device_id[:12]}", clock)

    # ---- views ------------------------------------------------------------------------

    def show_locked(self, message: str = "") -> None:
        status = self.gate.status()
        lines = [f"device {self.device.device_id[:16]}…", "", "[bold]LOCKED[/]",
                 "enter your code (TOTP or PIN) to read this display"]
        if status.wait_seconds > 0:
            lines.append(f"[yellow]locked out: next code checked in {status.wait_seconds:.0f} s[/]")
        if message:
            lines += ["", message]
        self.console.print(Panel("\n".join(lines), title="tinyward readout", width=64))

    def show_results(self) -> None:
        current = display.load(self.device.storage)
        mode = display.stated_mode(self.device.directory, current)
        table = Table(title=f"device {self.device.device_id[:16]}… — {mode}", width=64)
        table.add_column("result")
        table.add_column("value", justify="right")
        if not current.results:
            table.add_row("(no results yet)", "")
        for result in current.results[-1:]:
            for key, value in result.items():
                table.add_row(_plain(f"RESULT {key}"), _plain(value))
        for kind, count in sorted(current.incidents.items()):
            table.add_row(_plain(f"incident {kind}"), _plain(count))
        table.add_row("health", _plain(current.health))
        updated = (datetime.fromtimestamp(current.updated_at, UTC).isoformat(timespec="seconds")
                   if current.updated_at else "never")
        table.add_row("updated", updated)
        self.console.print(table)
        self.console.print(
            "(r) refresh  (q) signed report as QR code  (l) lock  (x) exit", markup=False
        )

    def show_qr(self) -> None:
        report = make_offline_report(self.device, display.load(self.device.storage), self.clock())
        text = to_text(report)
        make_private_dir(self.export_dir)
        name = f"report-{int(self.clock())}-{len(list(self.export_dir.iterdir())) + 1}.txt"
        atomic_write(self.export_dir / name, text.encode() + b"\n", mode=0o644)
        # Quadrant blocks: 49 columns for a 512-byte report (half blocks took 97).
        for line in terminal_lines(text, ansi=self.console.is_terminal):
            self.console.file.write(line + "\n")
        self.console.print("signed report (verify with `tinyward report verify`):")
        self.console.print(text, soft_wrap=True, markup=False, highlight=False)
        self.console.print(f"saved as {self.export_dir / name}")

    # ---- loop -------------------------------------------------------------------------

    def run(self, max_prompts: int | None = None) -> None:
        """Run the locked/unlocked loop until ``x``, end of input, or ``max_prompts``."""
        forbid_network()
        prompts = 0
        unlocked = False
        self.show_locked()
        while max_prompts is None or prompts < max_prompts:
            prompts += 1
            if not unlocked:
                self.console.print("code> ", end="")
                code = self.input.read(timeout=None, secret=True)
                if code is None:
                    return
                try:
                    self.gate.attempt(code)
                except LockedOut as error:
                    self.show_locked(f"[red]{error}[/] (code not checked)")
                    continue
                except WrongCode:
                    self.show_locked("[red]wrong code[/]")
                    continue
                except NoCredential as error:
                    self.show_locked(f"[red]{error}[/]")
                    return
                unlocked = True
                self.console.print("[green]unlocked[/]")
                self.show_results()
                continue
            self.console.print("> ", end="")
            command = self.input.read(timeout=self.idle_lock, secret=False)
            if command is None or command.strip() == "x":
                return
            command = command.strip()
            if command == "" or command == "l":
                unlocked = False
                self.show_locked("locked" + (" after inactivity" if command == "" else ""))
            elif command == "r":
                self.show_results()
            elif command == "q":
                self.show_qr()
            else:
                self.console.print("unknown key: r, q, l or x")
