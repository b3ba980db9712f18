"""`tinyward device …`: make, provision and inspect a device folder; `tinyward bench trust`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tinyward.trust.device import Device

console = Console()


@click.group()
def device() -> None:
    """Create, provision and inspect devices (a folder stands in for the device's flash)."""


@device.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
def init_command(directory: Path) -> None:
    """Make a new device in DIRECTORY: keys generated on the device, and an enrolment request.

    Writes DIRECTORY/enroll.csr.pem (public) for `tinyward fleet enroll`. Refuses a folder
    that already holds a device.
    """
    dev = Device.init(directory)
    console.print(f"device [bold]{dev.device_id}[/] created in {directory}")
    console.print(f"enrolment request: {directory / 'enroll.csr.pem'}")


@device.command("status")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def status_command(directory: Path, as_json: bool) -> None:
    """Show a device's identity, lifecycle state and root of trust (no secrets)."""
    status = Device.open(directory).status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    table = Table(show_header=False)
    for key, value in status.items():
        table.add_row(key, str(value))
    console.print(table)


@click.command("trust")
@click.option("--seconds", default=1.0, show_default=True, help="Time per operation and side.")
def bench_trust(seconds: float) -> None:
    """Cost of the trusted core: keystore and protected storage vs. bare `cryptography`."""
    from tinyward.trust import bench

    table = Table(title="trusted core vs. direct cryptography (same run)")
    table.add_column("operation")
    table.add_column("core ops/s", justify="right")
    table.add_column("direct ops/s", justify="right")
    table.add_column("overhead ×", justify="right")
    for row in bench.run(seconds=seconds):
        table.add_row(row.operation, f"{row.core_per_second:,.0f}",
                      f"{row.direct_per_second:,.0f}", f"{row.ratio:.2f}")
    console.print(table)


from tinyward.cli.device_run import run as _run_command

device.add_command(_run_command)

COMMANDS: list[click.Command] = [device]
BENCH_COMMANDS: list[click.Command] = [bench_trust]
