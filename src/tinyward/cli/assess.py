"""`tinyward assess …`: requirements, tiers and (as probes land) live evidence."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections import Counter
from pathlib import Path

import click

from tinyward.assess.evidence import Evidence
from tinyward.assess.model import COVERAGE_KINDS, Model, Requirement, load_model
from tinyward.assess.registry import PROBES
from tinyward.assess.target import (
    Description,
    allowed_address,
    load_description,
    make_target,
    parse_ports,
)
from tinyward.errors import BadInput

_KIND_TEXT = {"live": "live probe", "static": "static check", "declaration": "declaration only",
              "planned": "probe planned", "none": "nothing yet"}


@click.group("assess")
def assess() -> None:
    """Turn confidentiality, integrity and availability requirements into evidence.

    `tinyward assess requirements` shows the requirements model: each requirement, its
    tier, the probe that gathers its evidence, and the share of ETSI EN 303 645 provisions
    with a live probe, a static check or only a declaration.

    `tinyward assess run TARGET --out DIR` probes a device and writes the report.
    """


@assess.command("requirements")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--tier", type=click.IntRange(1, 9), default=None,
              help="Only the requirements needed for this tier (tiers are cumulative).")
@click.option("--provisions/--no-provisions", default=True, show_default=True,
              help="Also print the EN 303 645 coverage table, one row per provision.")
def requirements(as_json: bool, tier: int | None, provisions: bool) -> None:
    """The requirements model and its coverage of ETSI EN 303 645.

    A provision counts as covered by a live probe or a static check only when that probe
    exists in this build; a requirement whose probe is still to be built shows as
    "probe planned".
    """
    model = load_model()
    chosen = model.for_tier(tier) if tier is not None else model.requirements
    coverage = model.coverage(PROBES)
    counts = Counter(row.kind for row in coverage)
    if as_json:
        click.echo(json.dumps({
            "version": model.version, "standard": model.standard,
            "requirements": [{
                "id": r.id, "tier": r.tier, "asset": r.asset, "property": r.property,
                "title": r.title, "evidence": r.evidence, "probe": r.probe,
                "probe_available": r.probe in PROBES, "en303645": list(r.en303645),
                "nistir8425": list(r.nistir8425), "psti": list(r.psti),
                "en18031": list(r.en18031), "isvs": list(r.isvs), "cwe": list(r.cwe)}
                for r in chosen],
            "coverage": [{"provision": row.provision.id, "kind": row.kind,
                          "requirements": list(row.requirements)} for row in coverage],
            "counts": {kind: counts.get(kind, 0) for kind in COVERAGE_KINDS},
            "provisions": len(coverage)}, indent=2))
        return
    _print_requirements(model, chosen)
    if provisions:
        click.echo("")
        click.echo(f"{model.standard}: {len(coverage)} provisions")
        for row in coverage:
            names = ", ".join(row.requirements) or "-"
            click.echo(f"  {row.provision.id:<7} {_KIND_TEXT[row.kind]:<17} {names:<28} "
                       f"{row.provision.summary}")
    click.echo("")
    total = len(coverage)
    for kind in COVERAGE_KINDS:
        n = counts.get(kind, 0)
        share = 100 * n / total
        click.echo(f"{_KIND_TEXT[kind]:>17}: {n:>2} of {total} provisions ({share:.0f} %)")


def _print_requirements(model: Model, chosen: tuple[Requirement, ...]) -> None:
    click.echo(f"requirements model {model.version}: {len(chosen)} requirements")
    for level in sorted({r.tier for r in chosen}):
        name = next(t.name for t in model.tiers if t.level == level)
        click.echo(f"tier {level}: {name}")
        for r in (r for r in chosen if r.tier == level):
            state = "" if r.evidence == "declaration" or r.probe in PROBES else " (planned)"
            click.echo(f"  {r.id:<12} {r.property[0].upper()} {r.title:<62} "
                       f"{r.evidence}: {r.probe}{state}")


@assess.command("run")
@click.argument("target", required=False)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for report.html, report.json, report.sarif and datasheet.md.")
@click.option("--target-address", default=None, metavar="IP",
              help="An address that is not loopback, which you own and name explicitly.")
@click.option("--ports", default=None, metavar="LIST",
              help="Only these TCP ports (22,80,8000-8010); default every port. A partial "
                   "scan can find open ports but never shows that none is open.")
@click.option("--netns", default=None,
              help="TARGET is inside this lab network namespace; run the whole command "
                   "in it (ip netns exec NS tinyward assess run …).")
@click.option("--describe", "description_file", default=None,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The target description (TOML: name, vendor, security_contact, "
                   "support_end, product_class). Default: target.toml in the device folder.")
@click.option("--client-cert", nargs=2, default=None, metavar="CERT KEY",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A test client certificate and its key (PEM), for listeners that "
                   "demand one (the manufacturer supplies it for the assessment).")
@click.option("--device-command", default=None, metavar="ARGV",
              help="How to run the device's own client against a server URL, {server} "
                   "where the URL goes (shell-like quoting), for the pin-mitm probe.")
@click.option("--mitm-cert", nargs=2, default=None, metavar="CERT KEY",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A server certificate from the device's own CA for a key the device "
                   "must not accept (pin-mitm's right-CA-wrong-key attack).")
@click.option("--replay", "replay_file", default=None,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A captured request body the server has not seen (e.g. a signed "
                   "report), sent twice by the replay probe.")
@click.option("--replay-port", type=click.IntRange(1, 65535), default=None,
              help="The (TLS) port to replay it to.")
@click.option("--replay-path", default="/v1/reports", show_default=True,
              help="The HTTP path to post it to.")
@click.option("--login-port", type=click.IntRange(1, 65535), default=None,
              help="The port of an HTML form login, for the lockout-restart probe.")
@click.option("--login-path", default="/login", show_default=True,
              help="The path of the page with the login form.")
@click.option("--login-plain", is_flag=True,
              help="The login is plain HTTP (default: HTTPS).")
@click.option("--restart-command", default=None, metavar="ARGV",
              help="A command that restarts the device's process and returns (shell-like "
                   "quoting), so lockout-restart can check that a restart keeps the wait.")
@click.option("--uplink-port", type=click.IntRange(1, 65535), default=None,
              help="The fleet server's device port (on the TARGET's address, or "
                   "--uplink-address) that the device reports to: traffic-analysis captures "
                   "it, and replay sends a capture for that port there.")
@click.option("--uplink-address", default=None, metavar="IP",
              help="Where that fleet server is, when not on the target's address (a device "
                   "in a lab namespace reporting to the lab's fleet host); checked like the "
                   "target's address. A device that listens on no port is then judged by "
                   "its uplink for C-COMM-1 and A-PREAUTH-1.")
@click.option("--attest-command", default=None, metavar="ARGV",
              help="How to ask the device for an attestation token: {nonce} (hex) and "
                   "{out} (the token file) in the argv, for the attestation probe.")
@click.option("--attest-cert", default=None,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The device's attestation certificate (PEM); default: a tinyward device "
                   "folder's certs/attestation.crt.pem.")
@click.option("--app", "app_manifest", default=None,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The device's application manifest (sensor.toml, as given to `device "
                   "run --app`), for the leakage probe.")
@click.option("--fleet-store", default=None, metavar="PATH|URL",
              help="The fleet's report store the device reports to (FLEET_DIR/reports.db "
                   "or a store URL), read only, for the on-device-detection probe.")
@click.option("--airgap-command", default=None, metavar="ARGV",
              help="How to make the device sign a token in its air-gapped mode: {nonce} "
                   "(hex) and {out} in the argv, for the air-gapped probe.")
@click.option("--airgap-cert", default=None,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The attestation certificate of the device --airgap-command runs, if "
                   "not --attest-cert's or the device folder's.")
@click.option("--readout-command", default=None, metavar="ARGV",
              help="How to open the device's local readout (codes read from stdin), for "
                   "the air-gapped probe's brute-force check.")
@click.option("--fleet-dir", default=None,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The fleet folder the device reports to (its reports.db is read, never "
                   "written), for the failure-reporting and outage-recovery probes.")
@click.option("--seconds-per-probe", default=150.0, show_default=True,
              type=click.FloatRange(1, 3600),
              help="Each probe's time budget (an upper bound: most probes take seconds). "
                   "traffic-analysis needs 125 to decide and runs its full two 60 s phases "
                   "from 150.")
@click.option("--attempts", default=200, show_default=True, type=click.IntRange(1, 10_000),
              help="Each probe's budget of connection attempts.")
def run(target: str | None, out: Path, target_address: str | None, ports: str | None,
        netns: str | None, description_file: Path | None,
        client_cert: tuple[Path, Path] | None, device_command: str | None,
        mitm_cert: tuple[Path, Path] | None, replay_file: Path | None,
        replay_port: int | None, replay_path: str, login_port: int | None,
        login_path: str, login_plain: bool, restart_command: str | None,
        uplink_port: int | None, uplink_address: str | None, attest_command: str | None,
        attest_cert: Path | None,
        app_manifest: Path | None, fleet_store: str | None, airgap_command: str | None,
        airgap_cert: Path | None, readout_command: str | None, fleet_dir: Path | None,
        seconds_per_probe: float, attempts: int) -> None:
    """Probe TARGET (a loopback or lab address, or a device folder) and write the report.

    An address that is neither loopback nor inside --netns is refused unless you name it
    with --target-address (probe only what you own). Every probe is bounded in time and
    attempts; a requirement no probe could test is reported as not tested, never passed.
    """
    from tinyward.assess import report
    from tinyward.assess.run import all_probes
    from tinyward.assess.run import assess as run_assessment

    address, device_dir, named = None, None, False
    if target is not None:
        if Path(target).is_dir():
            device_dir = Path(target)
        else:
            address = allowed_address(target, netns=netns)
    if target_address is not None:
        if address is not None:
            raise BadInput("give the address either as TARGET or as --target-address")
        address, named = target_address, True
    if description_file is None and device_dir is not None and \
            (device_dir / "target.toml").is_file():
        if (device_dir / "target.toml").is_symlink():
            # The folder is the device's: as in the static walk, its links are not followed
            # (this one would read any file of the assessor's as the description).
            raise BadInput(f"{device_dir / 'target.toml'} is a symlink: give the description "
                           "with --describe")
        description_file = device_dir / "target.toml"
    description: Description | None = None
    if description_file is not None:
        description = load_description(description_file.read_text(encoding="utf-8"))
    checked = make_target(address=address, named=named,
                          ports=parse_ports(ports) if ports else None, netns=netns,
                          device_dir=device_dir, description=description,
                          client_cert=client_cert or None,
                          device_command=tuple(shlex.split(device_command))
                          if device_command else None,
                          mitm_cert=mitm_cert or None,
                          replay=_replay_spec(replay_file, replay_port, replay_path),
                          login=_login_spec(login_port, login_path, login_plain),
                          restart_command=tuple(shlex.split(restart_command))
                          if restart_command else None,
                          uplink_port=uplink_port, uplink_address=uplink_address,
                          attest_command=tuple(shlex.split(attest_command))
                          if attest_command else None, attest_cert=attest_cert,
                          app_manifest=app_manifest, fleet_store=fleet_store,
                          airgap_command=tuple(shlex.split(airgap_command))
                          if airgap_command else None,
                          readout_command=tuple(shlex.split(readout_command))
                          if readout_command else None, airgap_cert=airgap_cert,
                          fleet_dir=fleet_dir)
    probes = all_probes()
    step = iter(range(1, len(probes) + 1))

    def progress(name: str, evidence: list[Evidence]) -> None:
        verdicts = ", ".join(f"{e.requirement} {e.verdict}" for e in evidence) or "-"
        click.echo(f"[{next(step)}/{len(probes)}] {name}: {verdicts}", err=True)

    click.echo(f"assessing {checked.name} with {len(probes)} probes", err=True)
    result = run_assessment(checked, seconds_per_probe=seconds_per_probe, attempts=attempts,
                            progress=progress, probes=probes)
    out.mkdir(parents=True, exist_ok=True)
    files = {"report.json": report.to_json(result), "report.html": report.to_html(result),
             "report.sarif": report.to_sarif(result), "datasheet.md": report.to_datasheet(result)}
    for name, text in files.items():
        _write_report(out, name, text)
    blocking = ", ".join(e.requirement for e in result.tier.blocking) or "nothing"
    click.echo(f"tier {result.tier.level} ({result.tier.name}); next tier blocked by "
               f"{blocking}")
    click.echo(f"report: {out / 'report.html'}")


def _write_report(out: Path, name: str, text: str) -> None:
    """Write ``out/name`` through a new file renamed into place: a symlink already at that
    name (a device folder given as --out may carry one) is replaced, never written
    through, and a reader never sees half a report."""
    # mkstemp: O_EXCL | O_NOFOLLOW under a random name, so nothing planted is opened.
    descriptor, scratch_name = tempfile.mkstemp(prefix=f".{name}.", dir=out)
    scratch = Path(scratch_name)
    try:
        os.fchmod(descriptor, 0o644)  # a report, readable like any file the user writes
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(scratch, out / name)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def _replay_spec(replay_file: Path | None, port: int | None, path: str) -> object:
    from tinyward.assess.probes.replay import ReplaySpec

    if replay_file is None:
        return None
    if port is None:
        raise BadInput("--replay needs --replay-port")
    body = replay_file.read_bytes()
    if not body or len(body) > 1 << 16:
        raise BadInput("--replay: the capture must be 1 byte to 64 KiB")
    return ReplaySpec(body, port, path)


def _login_spec(port: int | None, path: str, plain: bool) -> object:
    from tinyward.assess.probes.lockout import LoginSpec

    if port is None:
        return None
    if not path.startswith("/") or len(path) > 200 or any(c.isspace() for c in path):
        raise BadInput("--login-path must be a path like /login")
    return LoginSpec(port, path, tls=not plain)


COMMANDS = (assess,)
