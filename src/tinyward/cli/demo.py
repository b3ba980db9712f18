"""`tinyward demo`: the main job, end to end, in a temporary folder.

Today it walks through the trusted core and the fleet: a fleet is created, devices are
provisioned (keys made on each device), each device attests, the fleet verifies the
tokens, and forged, replayed and foreign tokens are refused. Each step prints what it
did and what it proved; the exit code is 0 only if every expectation held.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tinyward.errors import BadInput
from tinyward.fleet.attestation import verify_fleet_token
from tinyward.fleet.pki import Fleet
from tinyward.trust.device import Device

console = Console()


class DemoFailed(click.ClickException):
    """An expectation of the demo did not hold (a bug: the demo checks what it shows)."""


def _expect_refused(label: str, action: Callable[[], object], results: list[tuple[str, str, bool]]) -> None:
    try:
        action()
    except BadInput as error:
        results.append((label, f"refused: {error}", True))
        console.print(f"  [green]✔ refused[/] {label}: [dim]{error}[/]")
        return
    results.append((label, "ACCEPTED", False))
    console.print(f"  [red]✘ accepted[/] {label}")


def run_foundation(workdir: Path, devices: int) -> list[tuple[str, str, bool]]:
    """Fleet, provisioning and attestation; returns (check, outcome, passed) rows."""
    results: list[tuple[str, str, bool]] = []
    passphrase = secrets.token_urlsafe(24).encode()

    console.rule("[bold]1. The fleet")
    fleet = Fleet.init(workdir / "fleet", passphrase)
    console.print(f"fleet [bold]{fleet.fleet_id}[/]: root CA, device CA, server certificate, "
                  "update-signing key (ECDSA P-256, private keys encrypted)")
    console.print(f"server pin (SHA-256 of its public key): {fleet.server_spki_sha256.hex()}")

    console.rule("[bold]2. Provisioning (keys are made on each device)")
    fleet_devices = []
    for index in range(devices):
        device = Device.init(workdir / f"device-{index + 1}")
        bundle = fleet.enroll(device.enrolment_request, passphrase)
        device.install(bundle)
        fleet_devices.append(device)
        console.print(f"device-{index + 1}: [bold]{device.device_id[:16]}…[/] enrolled "
                      f"(tls, report and attestation keys; no shared secret)")
    results.append(("devices provisioned", str(devices), True))

    console.rule("[bold]3. Attestation (PSA token, RFC 9783)")
    for index, device in enumerate(fleet_devices):
        nonce = os.urandom(32)
        token = device.attestation_token(nonce)
        enrolled, claims = verify_fleet_token(fleet, token, nonce)
        ok = enrolled.device_id == device.device_id
        results.append((f"device-{index + 1} token verifies", "valid" if ok else "WRONG DEVICE", ok))
        console.print(f"  [green]✔ valid[/] device-{index + 1}: {len(token)}-byte token, lifecycle "
                      f"{claims.security_lifecycle:#06x}, {len(claims.software_components)} measured "
                      "component(s)")

    console.rule("[bold]4. Attacks on attestation")
    device = fleet_devices[0]
    nonce = os.urandom(32)
    token = device.attestation_token(nonce)
    tampered = bytearray(token)
    tampered[len(tampered) // 2] ^= 0x01
    _expect_refused("a token with one flipped byte",
                    lambda: verify_fleet_token(fleet, bytes(tampered), nonce), results)
    _expect_refused("a replayed token (answers an old nonce)",
                    lambda: verify_fleet_token(fleet, token, os.urandom(32)), results)
    other = Fleet.init(workdir / "other-fleet", passphrase)
    _expect_refused("a genuine token shown to another fleet",
                    lambda: verify_fleet_token(other, token, nonce), results)
    _expect_refused("a truncated token",
                    lambda: verify_fleet_token(fleet, token[: len(token) // 2], nonce), results)
    return results


@click.command("demo")
@click.option("--devices", default=3, show_default=True, type=click.IntRange(1, 50),
              help="How many devices to provision.")
@click.option("--keep", type=click.Path(path_type=Path, file_okay=False),
              help="Keep everything in this folder instead of a temporary one.")
def demo(devices: int, keep: Path | None) -> None:
    """Run tinyward end to end in a temporary folder and show each attack being refused."""
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tinyward-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise click.UsageError(f"{workdir} is not empty; choose a new folder for --keep")
    try:
        results = run_foundation(workdir, devices)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    table = Table(title="summary")
    table.add_column("check")
    table.add_column("outcome")
    for label, outcome, passed in results:
        table.add_row(label, f"[green]{outcome}[/]" if passed else f"[red]{outcome}[/]")
    console.print(table)
    if not all(passed for _, _, passed in results):
        raise DemoFailed("an expectation did not hold (see the summary)")
    console.print("[bold green]every check held[/]" + (f"; files kept in {workdir}" if keep else ""))


COMMANDS: list[click.Command] = [demo]
BENCH_COMMANDS: list[click.Command] = []
