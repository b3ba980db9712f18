"""`tinyward fleet …`: the fleet's certificate authority (see cli/main.py for registration).

Thin: every decision is in ``tinyward.fleet.pki``; this module reads arguments and the
passphrase, calls it, and prints the outcome.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from cryptography.hazmat.primitives.serialization import Encoding
from rich.console import Console
from rich.table import Table

from tinyward._fsutil import atomic_write
from tinyward.cli._paths import check_output_file, new_folder, output_file
from tinyward.errors import TinywardError
from tinyward.fleet.bundle import DeviceBundle
from tinyward.fleet.enrolment import DEFAULT_ENROLMENT_LIMITS
from tinyward.fleet.errors import (
    AlreadyEnrolled,
    BadEnrolmentRequest,
    UnknownDevice,
    WeakPassphrase,
)
from tinyward.fleet.pki import Fleet

PASSPHRASE_ENV = "TINYWARD_FLEET_PASSPHRASE"
MIN_PASSPHRASE_CHARS = 12
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []


def _passphrase(new: bool) -> bytes:
    """The fleet passphrase: from the environment, or asked for without echo."""
    text = os.environ.get(PASSPHRASE_ENV)
    if text is None:
        text = click.prompt(
            "New fleet passphrase" if new else "Fleet passphrase",
            hide_input=True,
            confirmation_prompt="Repeat the passphrase" if new else False,
        )
    if new and len(text) < MIN_PASSPHRASE_CHARS:
        # The keys are only as strong as this passphrase against offline guessing.
        raise WeakPassphrase(
            f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters "
            "(it protects every key of the fleet)"
        )
    if not text:
        raise WeakPassphrase("the passphrase is empty")
    return text.encode("utf-8")


_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group("fleet")
def fleet() -> None:
    """Run a fleet's certificate authority: create it, enrol devices, revoke them.

    The passphrase that encrypts the fleet's private keys is read from the environment
    variable TINYWARD_FLEET_PASSPHRASE, or asked for (without echo) when it is not set.
    """


@fleet.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), callback=new_folder)
@click.option(
    "--server-name",
    "server_names",
    multiple=True,
    metavar="NAME",
    help="DNS name or IP address of the fleet server, for its TLS certificate. "
    "Repeat for several. Default: localhost and 127.0.0.1.",
)
def init(directory: Path, server_names: tuple[str, ...]) -> None:
    """Create a new fleet in DIRECTORY (a new or empty folder).

    Makes a root CA, a device-issuing CA, the fleet server's TLS certificate and a
    separate update-signing key, all ECDSA P-256, with private keys encrypted under the
    passphrase (at least 12 characters). An existing fleet is never overwritten.
    """
    passphrase = _passphrase(new=True)
    created = Fleet.init(directory, passphrase, server_names or DEFAULT_SERVER_NAMES)
    click.echo(f"created fleet {created.fleet_id} in {created.directory}")
    click.echo(f"server names: {', '.join(created.server_names)}")
    click.echo(f"server pin (SHA-256 of its public key): {created.server_spki_sha256.hex()}")


@fleet.command("enroll")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("request_pem", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=output_file,  # checked before the enrolment is recorded
    help="Where to write the device bundle (JSON). "
    "Default: <device ID>.bundle.json next to REQUEST_PEM.",
)
def enroll(fleet_dir: Path, request_pem: Path, output: Path | None) -> None:
    """Enrol the device whose enrolment request is REQUEST_PEM.

    REQUEST_PEM is the enroll.csr.pem written by `tinyward device init`. The answer is
    a bundle (the device's certificates, the fleet CAs and the server pin; no secrets)
    for `tinyward device install`.
    """
    opened = Fleet.open(fleet_dir)
    if output is None:  # the default goes next to the request: check that folder first
        check_output_file(request_pem.parent / "device.bundle.json")
    limit = DEFAULT_ENROLMENT_LIMITS.max_request_bytes
    with request_pem.open("rb") as handle:
        request = handle.read(limit + 1)  # never read an arbitrarily large file
    if len(request) > limit:
        raise BadEnrolmentRequest(f"{request_pem} is larger than {limit} bytes")
    try:
        bundle = opened.enroll(request, _passphrase(new=False))
    except AlreadyEnrolled as error:
        raise AlreadyEnrolled(f"{error}; to write its bundle again: tinyward fleet bundle "
                              f"{fleet_dir} {_requested_device_id(request)} -o FILE") from None
    target = output or request_pem.parent / f"{bundle.device_id}.bundle.json"
    _write_bundle(target, bundle, fleet_dir)
    click.echo(f"enrolled device {bundle.device_id} in fleet {opened.fleet_id}")
    click.echo(f"bundle written to {target}")


def _requested_device_id(request: bytes) -> str:
    # Only reached after the fleet parsed this very request, so it parses again.
    from tinyward.fleet.enrolment import parse_enrolment_request
    from tinyward.trust.identity import device_id

    key = parse_enrolment_request(request)["attestation"].public_key()
    return device_id(key)  # type: ignore[arg-type]  # checked P-256 by the parser


class BundleNotWritten(TinywardError):
    """The device is enrolled but its bundle could not be written (it can be re-issued)."""


def _write_bundle(target: Path, bundle: DeviceBundle, fleet_dir: Path) -> None:
    try:
        atomic_write(target, bundle.to_json(), mode=0o644)  # public material only
    except OSError as error:
        # The enrolment stays recorded; the bundle holds only public material, so it is
        # rebuilt from the fleet's records at any time: nothing is lost.
        raise BundleNotWritten(
            f"device {bundle.device_id} is enrolled, but its bundle could not be written to "
            f"{target} ({error.strerror}); write it again with: tinyward fleet bundle "
            f"{fleet_dir} {bundle.device_id} -o FILE") from None


def bundle_of(opened: Fleet, device_id: str) -> DeviceBundle:
    """The bundle of an enrolled device, rebuilt from the fleet's records (no passphrase:
    certificates, CAs and the pin are public)."""
    enrolled = opened.device(device_id)
    if enrolled.revoked:
        raise UnknownDevice(f"device {device_id} is revoked in fleet {opened.fleet_id}; "
                            "it gets no bundle")
    return DeviceBundle(
        device_id=device_id,
        fleet_id=opened.fleet_id,
        certificates={purpose: cert.public_bytes(Encoding.PEM).decode("ascii")
                      for purpose, cert in enrolled.certificates.items()},
        device_ca_pem=opened.device_ca.public_bytes(Encoding.PEM).decode("ascii"),
        root_ca_pem=opened.root_ca.public_bytes(Encoding.PEM).decode("ascii"),
        server_spki_sha256=opened.server_spki_sha256,
    )


@fleet.command("bundle")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("device_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              callback=output_file,
              help="Where to write the bundle [default: <device ID>.bundle.json here].")
def bundle_command(fleet_dir: Path, device_id: str, output: Path | None) -> None:
    """Write the bundle of an enrolled device DEVICE_ID again (e.g. after a lost file).

    The bundle holds only public material (certificates, CAs, the server pin), so no
    passphrase is needed and nothing new is issued. A revoked device gets none.
    """
    opened = Fleet.open(fleet_dir)
    bundle = bundle_of(opened, device_id)
    target = output or Path(f"{device_id}.bundle.json")
    check_output_file(target)
    _write_bundle(target, bundle, fleet_dir)
    click.echo(f"bundle of device {device_id} written to {target}")


@fleet.command("revoke")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("device_id")
def revoke(fleet_dir: Path, device_id: str) -> None:
    """Revoke DEVICE_ID: the fleet refuses its certificates from now on."""
    opened = Fleet.open(fleet_dir)
    opened.revoke(device_id)
    click.echo(f"revoked device {device_id} in fleet {opened.fleet_id}")


@fleet.command("devices")
@click.argument("fleet_dir", type=_EXISTING_DIR)
def devices(fleet_dir: Path) -> None:
    """List the devices enrolled in FLEET_DIR, revoked ones included."""
    opened = Fleet.open(fleet_dir)
    table = Table(title=f"fleet {opened.fleet_id}")
    table.add_column("device ID", no_wrap=True)
    table.add_column("enrolled", no_wrap=True)
    table.add_column("revoked", no_wrap=True)
    for device in opened.devices():
        revoked = "no"
        if device.revoked:
            revoked = (
                f"yes, {device.revoked_at.isoformat(timespec='seconds')}"
                if device.revoked_at
                else "yes"
            )
        table.add_row(device.device_id, device.enrolled_at.isoformat(timespec="seconds"), revoked)
    console = Console()
    if not console.is_terminal:
        console.width = 160  # device IDs are 64 characters; never cut them in a pipe
    console.print(table)


@fleet.command("show")
@click.argument("fleet_dir", type=_EXISTING_DIR)
def show(fleet_dir: Path) -> None:
    """Print FLEET_DIR's ID, server names, server pin and file locations."""
    opened = Fleet.open(fleet_dir)
    click.echo(f"fleet ID:      {opened.fleet_id}")
    click.echo(f"created:       {opened.created.isoformat(timespec='seconds')}")
    click.echo(f"server names:  {', '.join(opened.server_names)}")
    click.echo(f"server pin:    {opened.server_spki_sha256.hex()}")
    click.echo(f"server cert:   {opened.server_certificate_path}")
    click.echo(f"root CA:       {opened.root_ca_path}")
    click.echo(f"device CA:     {opened.device_ca_path}")
    click.echo(f"devices:       {len(opened.devices())}")


COMMANDS.append(fleet)


@click.command("fleet")
@click.option("--count", default=50, show_default=True, help="Devices to enrol (and verify x10).")
def bench_fleet(count: int) -> None:
    """Enrolment and certificate-verification speed, next to bare cryptography."""
    from tinyward.bench.fleet import run  # imported late: only the benchmark needs it

    table = Table(title=f"fleet PKI, {count} devices")
    for column in ("operation", "per second", "baseline", "per second ", "slower by"):
        table.add_column(
            column, justify="right" if "second" in column or "by" in column else "left"
        )
    for figure in run(count):
        table.add_row(
            figure.name,
            f"{figure.per_second:,.0f}",
            figure.baseline_name,
            f"{figure.baseline_per_second:,.0f}",
            f"{figure.ratio:.2f}x",
        )
    console = Console()
    if not console.is_terminal:
        console.width = 160
    console.print(table)


BENCH_COMMANDS.append(bench_fleet)

from tinyward.cli.fleet_serve import admin_token, serve  # own module: no merge conflicts

fleet.add_command(serve)
fleet.add_command(admin_token)
