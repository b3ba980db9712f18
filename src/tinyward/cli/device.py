"""`tinyward device …`: make, provision and inspect a device folder; `tinyward bench trust`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tinyward._fsutil import atomic_write
from tinyward.cli._nonce import hex_nonce
from tinyward.cli._paths import new_folder, output_file
from tinyward.cli.device_run import run as _run_command
from tinyward.errors import TinywardError
from tinyward.fleet.bundle import DeviceBundle
from tinyward.fleet.errors import BadBundle, UnknownDevice
from tinyward.fleet.pki import Fleet
from tinyward.trust.device import AlreadyProvisioned, Device

console = Console()


@click.group()
def device() -> None:
    """Create, provision and inspect devices (a folder stands in for the device's flash)."""


@device.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), callback=new_folder)
def init_command(directory: Path) -> None:
    """Make a new device in DIRECTORY: keys generated on the device, and an enrolment request.

    Writes DIRECTORY/enroll.csr.pem (public) for `tinyward fleet enroll`. Refuses a folder
    that already holds a device.
    """
    dev = Device.init(directory)
    console.print(f"device [bold]{dev.device_id}[/] created in {directory}")
    console.print(f"enrolment request: {directory / 'enroll.csr.pem'}")


@device.command("install")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("bundle_json", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--refresh", is_flag=True,
              help="The device is provisioned already: take only the new server pins from "
              "a later bundle of the same fleet (`fleet bundle`, after `fleet "
              "rotate-server-key`). Same device, certificates and fleet root, or refused.")
@click.option("--new-pins", is_flag=True,
              help="With --refresh: accept pins none of which the device holds now (after "
              "`fleet rotate-server-key --discard-next` only).")
def install_command(directory: Path, bundle_json: Path, refresh: bool, new_pins: bool) -> None:
    """Install the fleet's answer BUNDLE_JSON (from `tinyward fleet enroll`) on the device.

    Checks that each certificate carries this device's own key and chains to the bundle's
    CAs, then stores the fleet's trust anchors and the server pins in protected storage.
    """
    if new_pins and not refresh:
        raise click.UsageError("--new-pins goes with --refresh")
    dev = Device.open(directory)
    bundle = _read_bundle(bundle_json)
    if refresh:
        trust = dev.refresh(bundle, new_pins=new_pins)
        pins = ", ".join(pin.hex()[:16] + "…" for pin in trust.pins)
        console.print(f"device {dev.device_id} refreshed: server pins {pins}")
        return
    dev.install(bundle)
    console.print(f"device {dev.device_id} provisioned for fleet {dev.fleet_trust().fleet_id}")


def _read_bundle(path: Path) -> DeviceBundle:
    limit = 256 * 1024
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BadBundle(f"{path} is larger than {limit} bytes; not a device bundle")
    return DeviceBundle.from_json(data)


@device.command("provision")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), callback=new_folder)
@click.option("--fleet", "fleet_dir", required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="The fleet folder (from `tinyward fleet init`).")
@click.option("--readout", type=click.Choice(["totp", "pin", "none"]), default="totp",
              show_default=True,
              help="Enrol a device-unique credential for the local readout and print it once.")
@click.option("--keys", "keys_dir", default=None,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Folder of the fleet's offline keys (default: FLEET/keys).")
@click.option("--air-gapped", is_flag=True,
              help="Provision for air-gapped use: the device then refuses to connect until "
                   "re-provisioned with `tinyward device set-mode DIR connected`.")
@click.option("--report-interval", "report_interval", type=float, default=None,
              metavar="SECONDS",
              help="The device's declared schedule, recorded by the fleet (1 to 86400 s; the "
                   "server's rate limit is twice it); run it with the same --interval "
                   "[default: the fleet's].")
@click.option("--product-class", "product_class", default=None, metavar="NAME",
              help="The product the fleet enrols the device as (signed updates are per "
                   "product class); goes into its bundle with the update repository root.")
def provision_command(directory: Path, fleet_dir: Path, readout: str,
                      keys_dir: Path | None, air_gapped: bool,
                      report_interval: float | None, product_class: str | None) -> None:
    """Init, enrol and install in one step (a factory line, or a demo).

    Keys are still generated by the device; the fleet only sees the enrolment request.
    The CA passphrase comes from TINYWARD_CA_PASSPHRASE or a prompt, and is checked
    before a new device is made: a wrong one leaves nothing behind.

    Resumable: if a later step fails (an interrupted enrolment or install), run the same
    command again. It keeps the device made by the first attempt (its keys never leave it)
    and does only the steps still missing; an already enrolled device gets its bundle
    again from the fleet's records, with no passphrase.
    """
    from tinyward.cli.fleet_secrets import CA, read_secret

    fleet = Fleet.open(fleet_dir)
    if report_interval is not None:
        from tinyward.fleet.pki import check_report_interval

        check_report_interval(report_interval)  # before any passphrase or new device
    _check_product_class(product_class)
    dev: Device | None = None
    if (directory / "device.json").is_file():
        dev = Device.open(directory)
        if dev.provisioned:
            raise AlreadyProvisioned(f"{directory} holds device {dev.device_id}, already "
                                     f"provisioned for fleet {dev.fleet_trust().fleet_id}")
        console.print(f"resuming: {directory} holds device {dev.device_id[:16]}…, "
                      "not yet provisioned")
    if dev is not None and _is_enrolled(fleet, dev.device_id):
        bundle = fleet.bundle(dev.device_id)  # public material: no passphrase needed
        if report_interval is not None:  # the schedule asked for this time
            fleet.set_schedule(dev.device_id, report_interval)
    else:
        ca = fleet.device_ca_token(read_secret(CA), keys_dir)
        if dev is None:
            dev = Device.init(directory)
        try:
            bundle = fleet.enroll(dev.enrolment_request, ca, report_interval=report_interval,
                                  product_class=product_class)
        except TinywardError as error:
            # Same class and exit code, one more sentence: how to recover.
            hint = f"the device in {directory} is kept: run the same command again to finish"
            error.args = (f"{error}; {hint}",)
            raise
    dev.install(bundle)
    if air_gapped:
        dev.set_mode("air-gapped")
    console.print(f"device [bold]{dev.device_id}[/] provisioned for fleet {fleet.fleet_id}"
                  + (" (air-gapped: it will not connect)" if air_gapped else ""))
    schedule = fleet.device(dev.device_id).report_interval or fleet.report_interval
    console.print(f"declared schedule: one report every {schedule:g} s "
                  f"(run it with `device run --interval {schedule:g}`)")
    if readout != "none":
        _enrol_readout(dev, readout, pin=None)


def _check_product_class(product_class: str | None) -> None:
    from tinyward.fleet.errors import BadFleet
    from tinyward.update.meta import is_product_class

    if product_class is not None and not is_product_class(product_class):
        raise BadFleet(f"--product-class {product_class[:80]!r} is not a name (letters, "
                       "digits, _.-; up to 64)")


def _is_enrolled(fleet: Fleet, device_id: str) -> bool:
    try:
        fleet.device(device_id)
    except UnknownDevice:
        return False
    return True


def _enrol_readout(dev: Device, kind: str, pin: str | None) -> None:
    from tinyward.readout.qr import terminal_lines
    from tinyward.trust.readout import ReadoutGate

    gate = ReadoutGate(dev.storage, f"device-{dev.device_id[:12]}")
    if kind == "totp":
        uri = gate.enrol_totp()
        console.print("local readout: add this TOTP secret to an authenticator app "
                      "(shown once, never stored in clear):")
        console.print(uri, soft_wrap=True)
        for line in terminal_lines(uri, error="m", ansi=console.is_terminal):
            console.file.write(line + "\n")
    else:
        chosen = gate.enrol_pin(pin)
        if pin is None:
            console.print(f"local readout PIN (shown once): [bold]{chosen}[/]")
        else:
            console.print("local readout PIN set")


@device.command("readout-enrol")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--totp", "kind", flag_value="totp", default=True, help="A TOTP secret (default).")
@click.option("--pin", "kind", flag_value="pin", help="A PIN instead of TOTP.")
@click.option("--set-pin", "chosen_pin", default=None,
              help="Choose the PIN yourself (at least 6 digits) instead of a random one.")
def readout_enrol_command(directory: Path, kind: str, chosen_pin: str | None) -> None:
    """Set (or replace) the local readout's credential. Replacing resets the lockout."""
    _enrol_readout(Device.open(directory), kind, chosen_pin)


@device.command("set-mode")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("mode", type=click.Choice(["connected", "air-gapped"]))
def set_mode_command(directory: Path, mode: str) -> None:
    """Re-provision the device's operating mode (refused while the device runs).

    An air-gapped device refuses to connect; `device run --air-gapped` is always allowed.
    """
    from tinyward.trust.instance import InstanceLock

    dev = Device.open(directory)
    with InstanceLock(directory):
        dev.set_mode(mode)
    console.print(f"device {dev.device_id[:16]}… is now provisioned {mode}")


@device.command("attest")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--nonce", required=True, help="The verifier's challenge: 32, 48 or 64 bytes as hex.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              callback=output_file, help="Where to write the token (CBOR).")
@click.option("--app", "app_paths", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Application code to measure into the token (repeatable).")
@click.option("--model", "model_paths", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Model files to measure into the token (repeatable).")
def attest_command(directory: Path, nonce: str, output: Path, app_paths: tuple[Path, ...],
                   model_paths: tuple[Path, ...]) -> None:
    """Make a PSA attestation token (RFC 9783) answering NONCE, signed by the device.

    The token claims the operating mode enforced in this very process: an air-gapped
    device's token is signed under the air-gap filter, a connected one's is not. (A
    running device signs tokens with its protections too: `device run --attest-nonce`.)
    """
    measured = []
    if app_paths:
        measured.append(("App", list(app_paths)))
    if model_paths:
        measured.append(("App_CONFIG", list(model_paths)))
    dev = Device.open(directory)
    if dev.provisioned_mode == "air-gapped":
        from tinyward.trust.airgap import forbid_network

        forbid_network()  # the device acts under its air gap, so the claim says so truly
    token = dev.attestation_token(hex_nonce(nonce), measured=measured)
    atomic_write(output, token, mode=0o644)
    console.print(f"token ({len(token)} bytes) written to {output}")


@device.command("readout")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--idle-lock", default=60.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Lock again after this many seconds without a key.")
def readout_command(directory: Path, idle_lock: float) -> None:
    """The local readout (stands in for the device's e-ink display).

    Locked until you enter the device's TOTP code or PIN; failed codes make you wait
    longer and longer, even across restarts. Once unlocked: r refresh, q signed report as
    a QR code, l lock, x exit. The readout process cannot open network sockets.
    """
    from tinyward.readout.screen import ReadoutScreen

    ReadoutScreen(Device.open(directory), console, idle_lock=idle_lock).run()


@device.command("status")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def status_command(directory: Path, as_json: bool) -> None:
    """Show a device's identity, lifecycle state and root of trust (no secrets).

    Also reads back every key and the fleet record, so a damaged or deleted record shows
    here (exit non-zero), not later at a run or a readout.
    """
    dev = Device.open(directory)
    status = dev.status()
    problems = _problems(dev)
    status["problems"] = [str(p) for p in problems]
    if as_json:
        click.echo(json.dumps(status, indent=2))
    else:
        table = Table(show_header=False)
        for key, value in status.items():
            if key != "problems":
                table.add_row(key, _cell(value))
        table.add_row("problems", "\n".join(status["problems"]) or "none")
        console.print(table)
    if problems:
        raise DeviceDamaged(f"device {dev.device_id[:16]}… is damaged: {problems[0]}",
                            exit_code=problems[0].exit_code)


def _cell(value: object) -> str:
    """A status value as a person reads it (not a Python repr): lists joined, yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "none"
    return "—" if value is None else str(value)


class DeviceDamaged(TinywardError):
    """`device status` found a record it cannot read back (the first problem, of several)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _problems(dev: Device) -> list[TinywardError]:
    """Every key record and the fleet record, read back and authenticated."""
    from tinyward.trust.device import KEY_PURPOSES

    found: list[TinywardError] = []
    for purpose in KEY_PURPOSES:
        try:
            dev.keystore.public_key(dev.handle(purpose))
        except TinywardError as error:
            found.append(error)
    if dev.provisioned:
        try:
            dev.fleet_trust()
        except TinywardError as error:
            found.append(error)
    return found


@click.command("trust")
@click.option("--seconds", default=1.0, show_default=True, help="Time per operation and side.")
def bench_trust(seconds: float) -> None:
    """Cost of the trusted core: keystore and protected storage vs. bare `cryptography`."""
    from tinyward.bench import trust as bench

    table = Table(title="trusted core vs. direct cryptography (same run)")
    table.add_column("operation")
    table.add_column("core ops/s", justify="right")
    table.add_column("direct ops/s", justify="right")
    table.add_column("overhead ×", justify="right")
    for row in bench.run(seconds=seconds):
        table.add_row(row.operation, f"{row.core_per_second:,.0f}",
                      f"{row.direct_per_second:,.0f}", f"{row.ratio:.2f}")
    console.print(table)


# `device run` lives in cli/device_run.py, which imports nothing from this module.
device.add_command(_run_command)

COMMANDS: list[click.Command] = [device]
BENCH_COMMANDS: list[click.Command] = [bench_trust]
