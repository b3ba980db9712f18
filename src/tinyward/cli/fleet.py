"""`tinyward fleet …`: the fleet's certificate authority (see cli/main.py for registration).

Thin: every decision is in ``tinyward.fleet.pki``; this module reads arguments and the
passphrases (``cli/fleet_secrets.py``), calls it, and prints the outcome.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tinyward._fsutil import atomic_write
from tinyward.cli._paths import check_output_file, new_folder, output_file
from tinyward.cli.fleet_secrets import CA, OLD, SERVER, UPDATE, read_secret
from tinyward.errors import TinywardError
from tinyward.fleet.bundle import DeviceBundle
from tinyward.fleet.enrolment import DEFAULT_ENROLMENT_LIMITS
from tinyward.fleet.errors import (
    AlreadyEnrolled,
    BadEnrolmentRequest,
)
from tinyward.fleet.keyseal import read_params
from tinyward.fleet.pki import (
    DEFAULT_REPORT_INTERVAL,
    MAX_REPORT_INTERVAL,
    MIN_REPORT_INTERVAL,
    Fleet,
    device_ca_label,
)

DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []


_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_KEYS = click.option(
    "--keys",
    "keys_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of the offline keys (default: FLEET_DIR/keys), e.g. on removable media.",
)
_BOUNDS = f"{MIN_REPORT_INTERVAL:g} to {MAX_REPORT_INTERVAL:g}"


# Plain floats: the bounds are checked by the fleet (BadSchedule: one clear line).
_FLEET_INTERVAL = click.option(
    "--report-interval", "report_interval", type=float, default=DEFAULT_REPORT_INTERVAL,
    metavar="SECONDS", show_default=True,
    help="Default report schedule of devices enrolled without one: seconds between "
    f"reports; the server's rate limit is twice it ({_BOUNDS} s).")
_DEVICE_INTERVAL = click.option(
    "--report-interval", "report_interval", type=float, default=None, metavar="SECONDS",
    help="The device's declared schedule, seconds between its reports (its `device run "
    "--interval`); the server's rate limit for it is twice that "
    f"({_BOUNDS} s) [default: the fleet's].")


def _interval(seconds: float | None) -> str:
    return "not recorded (the server's --report-interval)" if seconds is None \
        else f"{seconds:g} s"


_NO_SERVER_PASSPHRASE = click.option(
    "--no-server-passphrase",
    is_flag=True,
    help="Keep the server's TLS key in clear, readable only by this user (0600), so "
    "`fleet serve` needs no passphrase. Default: sealed under TINYWARD_SERVER_PASSPHRASE.",
)


@click.group("fleet")
def fleet() -> None:
    """Run a fleet's certificate authority: create it, enrol devices, revoke them.

    Each key role has its own passphrase, read from its environment variable or asked
    for without echo: TINYWARD_CA_PASSPHRASE (root and device CA: init, enroll,
    rotations), TINYWARD_UPDATE_PASSPHRASE (update signing), TINYWARD_SERVER_PASSPHRASE
    (the server's TLS key; the only one `fleet serve` may have).
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
@_NO_SERVER_PASSPHRASE
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write the sealed CA and update keys to this new folder "
              "(e.g. removable media) instead of DIRECTORY/keys.")
@_FLEET_INTERVAL
def init(directory: Path, server_names: tuple[str, ...], no_server_passphrase: bool,
         keys_dir: Path | None, report_interval: float) -> None:
    """Create a new fleet in DIRECTORY (a new or empty folder).

    Makes a root CA, a device-issuing CA, the fleet server's TLS certificate and a
    separate update-signing key, all ECDSA P-256. The CA keys are sealed under the CA
    passphrase and the update key under the update passphrase, in DIRECTORY/keys (keep
    it offline); the server key under the server passphrase. Keys at rest: scrypt
    (n=2^17, r=8, p=1: 128 MiB per guess) + AES-256-GCM. Each passphrase: at least
    14 characters, 6 different ones, not a common password, run or repeat; no two the
    same. An existing fleet is never overwritten.
    """
    from tinyward.fleet.pki import check_report_interval

    check_report_interval(report_interval)  # before any passphrase is asked for
    ca = read_secret(CA, new=True)
    update = read_secret(UPDATE, new=True)
    server = None if no_server_passphrase else read_secret(SERVER, new=True)
    created = Fleet.init(directory, ca, server_names or DEFAULT_SERVER_NAMES,
                         update_passphrase=update, server_passphrase=server, keys_dir=keys_dir,
                         report_interval=report_interval)
    click.echo(f"created fleet {created.fleet_id} in {created.directory}")
    if keys_dir is None:
        click.echo(f"offline keys (CA, update signing): {created.keys_path} "
                   "(move them offline; then pass --keys)")
    else:
        click.echo(f"offline keys (CA, update signing): {keys_dir} (pass --keys {keys_dir})")
    click.echo(f"server names: {', '.join(created.server_names)}")
    click.echo(f"default report interval: {created.report_interval:g} s")
    click.echo(f"server pin (SHA-256 of its public key): {created.server_spki_sha256.hex()}")
    _echo_next_pin(created)


def _echo_next_pin(opened: Fleet) -> None:
    if opened.server_next_spki_sha256 is not None:
        click.echo(f"next server pin (in every bundle too): {opened.server_next_spki_sha256.hex()}")


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
@_KEYS
@_DEVICE_INTERVAL
@click.option("--cohort", default=None, metavar="NAME",
              help="The device's rollout cohort (`tinyward rollout start --cohort`).")
@click.option("--product-class", "product_class", default=None, metavar="NAME",
              help="The product the fleet enrols the device as (signed updates are per "
              "product class); recorded, and in the bundle with the update repository root.")
def enroll(fleet_dir: Path, request_pem: Path, output: Path | None,
           keys_dir: Path | None, report_interval: float | None, cohort: str | None,
           product_class: str | None) -> None:
    """Enrol the device whose enrolment request is REQUEST_PEM.

    REQUEST_PEM is the enroll.csr.pem written by `tinyward device init`. The answer is
    a bundle (the device's certificates, the fleet CAs and the server pin; no secrets)
    for `tinyward device install`. Needs the CA passphrase (TINYWARD_CA_PASSPHRASE).
    """
    from tinyward.fleet.pki import check_report_interval

    opened = Fleet.open(fleet_dir)
    if report_interval is not None:
        check_report_interval(report_interval)  # before the passphrase is asked for
    if cohort is not None:
        from tinyward.fleet.rollout import check_cohort

        check_cohort(cohort)  # likewise
    if product_class is not None:
        from tinyward.fleet.errors import BadFleet
        from tinyward.update.meta import is_product_class

        if not is_product_class(product_class):
            raise BadFleet(f"--product-class {product_class[:80]!r} is not a name (letters, "
                           "digits, _.-; up to 64)")
    if output is None:  # the default goes next to the request: check that folder first
        check_output_file(request_pem.parent / "device.bundle.json")
    limit = DEFAULT_ENROLMENT_LIMITS.max_request_bytes
    with request_pem.open("rb") as handle:
        request = handle.read(limit + 1)  # never read an arbitrarily large file
    if len(request) > limit:
        raise BadEnrolmentRequest(f"{request_pem} is larger than {limit} bytes")
    try:
        bundle = opened.enroll(request, opened.device_ca_token(read_secret(CA), keys_dir),
                               report_interval=report_interval, cohort=cohort,
                               product_class=product_class)
    except AlreadyEnrolled as error:
        raise AlreadyEnrolled(f"{error}; to write its bundle again: tinyward fleet bundle "
                              f"{fleet_dir} {_requested_device_id(request)} -o FILE") from None
    target = output or request_pem.parent / f"{bundle.device_id}.bundle.json"
    _write_bundle(target, bundle, fleet_dir)
    schedule = opened.report_interval if report_interval is None else report_interval
    click.echo(f"enrolled device {bundle.device_id} in fleet {opened.fleet_id}, reporting "
               f"every {schedule:g} s")
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


@fleet.command("bundle")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("device_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              callback=output_file,
              help="Where to write the bundle [default: <device ID>.bundle.json here].")
def bundle_command(fleet_dir: Path, device_id: str, output: Path | None) -> None:
    """Write the bundle of the enrolled device DEVICE_ID again, with today's server pins.

    For a lost bundle, or to refresh a device's pins after `rotate-server-key`
    (`tinyward device install --refresh`). Public material only: no passphrase, nothing
    new is issued. A revoked device gets none.
    """
    opened = Fleet.open(fleet_dir)
    bundle = opened.bundle(device_id)
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


@fleet.command("set-schedule")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("device_id")
@click.option("--report-interval", "report_interval", type=float, required=True,
              metavar="SECONDS", help=f"Seconds between the device's reports ({_BOUNDS} s).")
def set_schedule(fleet_dir: Path, device_id: str, report_interval: float) -> None:
    """Record a new report schedule for DEVICE_ID (the server's rate limit follows it).

    A running server applies it at the device's next request. The device's own
    `device run --interval` must match: run it with the new interval.
    """
    changed = Fleet.open(fleet_dir).set_schedule(device_id, report_interval)
    click.echo(f"device {device_id} now reports every {_interval(changed.report_interval)}; "
               "restart its `device run` with --interval to match")


@fleet.command("set-cohort")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("device_id")
@click.argument("cohort", required=False)
@click.option("--none", "clear", is_flag=True, help="Take the device out of every cohort.")
def set_cohort(fleet_dir: Path, device_id: str, cohort: str | None, clear: bool) -> None:
    """Put DEVICE_ID in rollout cohort COHORT (or in none, with --none).

    Rollouts that name cohorts offer their target only to devices of those cohorts; a
    running server applies the change at the device's next request.
    """
    if (cohort is None) == (not clear):
        raise click.UsageError("give a COHORT or --none (not both)")
    changed = Fleet.open(fleet_dir).set_cohort(device_id, cohort)
    click.echo(f"device {device_id} is now in "
               + (f"cohort {changed.cohort}" if changed.cohort else "no cohort"))


@fleet.command("show")
@click.argument("fleet_dir", type=_EXISTING_DIR)
def show(fleet_dir: Path) -> None:
    """Print FLEET_DIR's ID, server names, server pin and file locations."""
    opened = Fleet.open(fleet_dir)
    click.echo(f"fleet ID:      {opened.fleet_id}")
    click.echo(f"created:       {opened.created.isoformat(timespec='seconds')}")
    click.echo(f"server names:  {', '.join(opened.server_names)}")
    click.echo(f"report every:  {opened.report_interval:g} s (default of new devices; "
               "`fleet devices` lists each one's)")
    click.echo(f"server pin:    {opened.server_spki_sha256.hex()}")
    next_pin = opened.server_next_spki_sha256
    click.echo(f"next pin:      {next_pin.hex() if next_pin else 'none (fleet next-server-key)'}")
    if next_pin == opened.server_spki_sha256:
        click.echo("               = the current pin: a rotation stopped half-way; run "
                   "`fleet rotate-server-key` again")
    click.echo(f"server cert:   {opened.server_certificate_path}")
    click.echo(f"root CA:       {opened.root_ca_path}")
    click.echo(f"device CA:     {opened.device_ca_path}")
    for old in opened.retiring_device_cas:
        click.echo(f"retiring CA:   {device_ca_label(old)} (until `fleet retire-device-ca`)")
    click.echo(f"server key:    {opened.server_key_path}")
    click.echo(f"offline keys:  {opened.keys_path}")
    for path in [*sorted(opened.keys_path.glob("*.key")), opened.server_key_path]:
        if path.suffix == ".key":
            params = read_params(path.read_bytes())
            click.echo(f"  {path.name}: scrypt n={params.n} r={params.r} p={params.p} "
                       f"({params.memory_bytes >> 20} MiB per guess), AES-256-GCM")
    click.echo(f"devices:       {len(opened.devices())}")


@fleet.command("migrate")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_NO_SERVER_PASSPHRASE
def migrate(fleet_dir: Path, no_server_passphrase: bool) -> None:
    """Move a fleet of the old format (one passphrase, PBKDF2) to one secret per role.

    Reads the old passphrase from TINYWARD_FLEET_PASSPHRASE (or a prompt) and the new
    CA, update and server passphrases as `fleet init` does; seals every key with scrypt
    and deletes the old key files. Safe to run again if it is interrupted.
    """
    old = read_secret(OLD)
    ca = read_secret(CA, new=True)
    update = read_secret(UPDATE, new=True)
    server = None if no_server_passphrase else read_secret(SERVER, new=True)
    migrated = Fleet.migrate(fleet_dir, old, ca, update, server)
    click.echo(f"migrated fleet {migrated.fleet_id}: offline keys in {migrated.keys_path}, "
               f"server key {migrated.server_key_path}")


@fleet.command("rotate-server-key")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_KEYS
@_NO_SERVER_PASSPHRASE
@click.option("--discard-next", is_flag=True,
              help="Do not promote the next key (it may be compromised too): a brand-new "
              "key, which devices refuse until they install a refreshed bundle with "
              "`device install --refresh --new-pins`.")
def rotate_server_key(fleet_dir: Path, keys_dir: Path | None, no_server_passphrase: bool,
                      discard_next: bool) -> None:
    """Promote the next server key (its pin is in every bundle) and make a fresh next one.

    Devices provisioned before keep talking to the server: they accept the promoted key.
    Give them a refreshed bundle (`fleet bundle`, then `device install --refresh`) so
    that they learn the fresh next pin before the rotation after this one. Needs the CA
    passphrase (root CA and the next key) and a new server passphrase.
    """
    opened = Fleet.open(fleet_dir)
    ca = read_secret(CA)
    root = opened.root_ca_token(ca, keys_dir)
    server = None if no_server_passphrase else read_secret(SERVER, new=True)
    promoted = opened.server_next_spki_sha256 is not None and not discard_next
    rotated = opened.rotate_server_key(root, server, ca_passphrase=ca, keys_dir=keys_dir,
                                       discard_next=discard_next)
    click.echo(f"new server key {rotated.server_key_path}; restart `fleet serve`")
    click.echo(f"server pin (SHA-256 of its public key): {rotated.server_spki_sha256.hex()}")
    _echo_next_pin(rotated)
    if promoted:
        click.echo("devices provisioned before accept it (it was their next pin); refresh "
                   "their bundles (`fleet bundle`) so they learn the new next pin")
    else:
        click.echo("devices refuse this key until they install a refreshed bundle "
                   "(`fleet bundle`, `device install --refresh --new-pins`)")


@fleet.command("next-server-key")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_KEYS
def next_server_key(fleet_dir: Path, keys_dir: Path | None) -> None:
    """Make the next server key of a fleet made before pin roll-over (CA passphrase).

    Bundles carry its pin from now on; `rotate-server-key` promotes it.
    """
    made = Fleet.open(fleet_dir).make_next_server_key(read_secret(CA), keys_dir)
    _echo_next_pin(made)


@fleet.command("renew-server-cert")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_KEYS
def renew_server_cert(fleet_dir: Path, keys_dir: Path | None) -> None:
    """Renew the server's certificate (2 years) for the same key: devices keep their pin.

    Needs the CA passphrase (the root CA signs it). Restart `fleet serve` afterwards.
    """
    opened = Fleet.open(fleet_dir)
    renewed = opened.renew_server_certificate(opened.root_ca_token(read_secret(CA), keys_dir))
    until = renewed.server_certificate.not_valid_after_utc.date().isoformat()
    click.echo(f"server certificate renewed until {until}; pin unchanged: "
               f"{renewed.server_spki_sha256.hex()}")


@fleet.command("rotate-device-ca")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_KEYS
def rotate_device_ca(fleet_dir: Path, keys_dir: Path | None) -> None:
    """Make a new device-issuing CA; devices of the old one stay trusted until it is retired.

    Needs the CA passphrase (TINYWARD_CA_PASSPHRASE); the new key is sealed under it.
    """
    opened = Fleet.open(fleet_dir)
    passphrase = read_secret(CA)
    root = opened.root_ca_token(passphrase, keys_dir)
    rotated = opened.rotate_device_ca(root, passphrase)
    click.echo(f"new device CA {device_ca_label(rotated.device_ca)}; still trusted: "
               + ", ".join(device_ca_label(c) for c in rotated.retiring_device_cas))
    click.echo("restart `fleet serve`; retire the old CA once its devices are re-enrolled")


@fleet.command("retire-device-ca")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("label")
def retire_device_ca(fleet_dir: Path, label: str) -> None:
    """Stop trusting the retiring device CA LABEL (see `fleet show`): its devices are refused."""
    Fleet.open(fleet_dir).retire_device_ca(label)
    click.echo(f"retired device CA {label}; restart `fleet serve`")


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
            f"{figure.per_second:,.0f}" if figure.per_second >= 10 else f"{figure.per_second:.2f}",
            figure.baseline_name,
            f"{figure.baseline_per_second:,.0f}",
            f"{figure.ratio:.2f}x",
        )
    console = Console()
    if not console.is_terminal:
        console.width = 160
    console.print(table)


BENCH_COMMANDS.append(bench_fleet)

# Last: fleet_serve builds on this module's options (own module: no merge conflicts).
from tinyward.cli.fleet_serve import admin_token, serve  # noqa: E402

fleet.add_command(serve)
fleet.add_command(admin_token)

# The operator's views (reports, incidents, devices with their state): cli/fleet_ops.py.
from tinyward.cli.fleet_ops import devices, incidents, reports  # noqa: E402

for _command in (devices, incidents, reports):
    fleet.add_command(_command)

from tinyward.cli.fleet_dashboard import dashboard_password  # noqa: E402

fleet.add_command(dashboard_password)
