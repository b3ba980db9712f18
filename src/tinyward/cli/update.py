"""`tinyward update …`: the fleet's update repository (TUF), see docs/updates.md.

Thin: every decision is in ``tinyward.fleet.update_repo``. Passphrases: each offline key
has its own, read from ``TINYWARD_UPDATE_KEY_<NAME>_PASSPHRASE`` (e.g.
``TINYWARD_UPDATE_KEY_ROOT_2_PASSPHRASE``) or asked for without echo; the fleet's
update-signing key keeps ``TINYWARD_UPDATE_PASSPHRASE``; the online keys the server's
``TINYWARD_SERVER_PASSPHRASE``. Nothing here prints a secret.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tinyward.cli.fleet_secrets import SERVER, UPDATE, read_secret, update_key_role
from tinyward.fleet.pki import Fleet
from tinyward.fleet.update_repo import (
    UPDATE_SIGNING_KEY,
    MissingKey,
    RootChange,
    SignOutcome,
    UpdateRepository,
)
from tinyward.update.meta import COMPONENTS

COMMANDS: list[click.Command] = []

_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_KEYS = click.option("--keys", "keys_dir", type=_EXISTING_DIR, default=None,
                     help="Folder of the offline keys (default: FLEET_DIR/keys).")
_SIGN_KEYS = click.option("--key", "key_names", multiple=True, metavar="NAME",
                          help="Sign with this offline key (repeat for several holders).")
_MAX_FILE = 512 * 1024 * 1024


def _server_secret(fleet_dir: Path) -> bytes | None:
    """The server passphrase, unless the fleet keeps its server key (and so its online
    update keys) in clear."""
    fleet = Fleet.open(fleet_dir)
    if fleet.server_key_path.name.endswith(".pem"):
        return None
    return read_secret(SERVER)


def _secret(name: str, new: bool = False) -> bytes:
    return read_secret(UPDATE if name == UPDATE_SIGNING_KEY else update_key_role(name), new=new)


def _signers(repo: UpdateRepository, names: tuple[str, ...]) -> list:  # type: ignore[type-arg]
    if len(set(names)) != len(names):
        raise MissingKey("a key was named twice; each holder signs once")
    for name in names:  # every name checked before any passphrase is asked for
        repo.offline_key(name)
    return [repo.offline_signer(name, _secret(name)) for name in names]


def _outcome(outcome: SignOutcome, fleet_dir: Path) -> None:
    who = ", ".join(outcome.signed_by) or "nobody"
    if outcome.committed:
        click.echo(f"published {outcome.role} version {outcome.version} (signed by {who})")
        if outcome.online_refreshed:
            click.echo(f"re-signed online roles: {', '.join(outcome.online_refreshed)}")
    else:
        click.echo(f"{outcome.role} version {outcome.version} is signed by {who}; "
                   f"{outcome.missing} more signature(s) needed: tinyward update sign "
                   f"{fleet_dir} {outcome.role} --key NAME")


@click.group("update")
def update() -> None:
    """The fleet's signed update repository (The Update Framework).

    Root and targets keys are offline, each sealed with its own passphrase, with
    thresholds; snapshot and timestamp keys are online (the server re-signs them).
    See docs/updates.md.
    """


COMMANDS.append(update)


@update.command("init")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.option("--root-keys", default=3, show_default=True, help="Number of root keys.")
@click.option("--root-threshold", default=2, show_default=True,
              help="Root signatures needed (of --root-keys).")
@click.option("--targets-keys", default=1, show_default=True,
              help="Number of targets keys, the fleet's update-signing key included.")
@click.option("--targets-threshold", default=1, show_default=True,
              help="Targets signatures needed to publish.")
@_KEYS
def init_command(fleet_dir: Path, root_keys: int, root_threshold: int, targets_keys: int,
                 targets_threshold: int, keys_dir: Path | None) -> None:
    """Make FLEET_DIR's update repository and publish its empty version 1.

    Asks for one new passphrase per new offline key (TINYWARD_UPDATE_KEY_ROOT_1_PASSPHRASE
    ..., TINYWARD_UPDATE_KEY_TARGETS_2_PASSPHRASE ...), the update passphrase (the fleet's
    update-signing key becomes targets key "update-signing") and the server passphrase
    (online keys).
    """
    from tinyward.fleet.update_keys import check_threshold

    check_threshold("root", root_threshold, root_keys)  # before any passphrase is asked
    check_threshold("targets", targets_threshold, targets_keys)
    fleet = Fleet.open(fleet_dir)
    repo = UpdateRepository(fleet_dir, keys_dir=keys_dir)
    if repo.exists:
        from tinyward.fleet.update_repo import RepositoryError

        raise RepositoryError(f"{fleet_dir} already has an update repository")
    token = None
    first_targets = 1
    if fleet.update_signing_public_key is not None:
        token = fleet.update_signing_token(read_secret(UPDATE), keys_dir)
        first_targets = 2
    root_secrets = [_secret(f"root-{i}", new=True) for i in range(1, root_keys + 1)]
    targets_secrets = [_secret(f"targets-{i}", new=True)
                       for i in range(first_targets, targets_keys + 1)]
    repo = UpdateRepository.init(
        fleet_dir, root_secrets=root_secrets, targets_secrets=targets_secrets,
        update_signing=token, server_secret=_server_secret(fleet_dir),
        root_threshold=root_threshold, targets_threshold=targets_threshold, keys_dir=keys_dir)
    click.echo(f"update repository in {repo.base / 'repo'}: root {root_threshold} of "
               f"{root_keys}, targets {targets_threshold} of {targets_keys}")
    click.echo(f"offline keys in {repo.keys_dir} (move them offline; then pass --keys)")


@update.command("add")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("component", metavar=f"COMPONENT ({'|'.join(COMPONENTS)})")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="MAJOR.MINOR.PATCH, newer than "
              "the published one of this component and product class.")
@click.option("--product-class", required=True, help="The product the target is for.")
@click.option("--min-tinyward", default="0.1.0", show_default=True,
              help="Oldest tinyward that may install it.")
@click.option("--device", "devices", multiple=True, metavar="ID",
              help="Only for this device (repeat); default: every device of the class.")
@click.option("--cohort", "cohorts", multiple=True, metavar="NAME",
              help="Rollout cohort (repeat).")
def add_command(fleet_dir: Path, component: str, file: Path, version: str, product_class: str,
                min_tinyward: str, devices: tuple[str, ...], cohorts: tuple[str, ...]) -> None:
    """Stage FILE as a new version of COMPONENT (published by `update publish`)."""
    from tinyward.fleet.update_repo import RepositoryError

    with file.open("rb") as handle:
        data = handle.read(_MAX_FILE + 1)
    if len(data) > _MAX_FILE:
        raise RepositoryError(f"{file} is larger than {_MAX_FILE} bytes")
    name = UpdateRepository(fleet_dir).add(
        component, data, version=version, product_class=product_class,
        min_tinyward=min_tinyward, devices=devices, cohorts=cohorts)
    click.echo(f"staged {name} ({len(data)} bytes); publish with: tinyward update publish "
               f"{fleet_dir}")


@update.command("publish")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_SIGN_KEYS
@_KEYS
def publish_command(fleet_dir: Path, key_names: tuple[str, ...], keys_dir: Path | None) -> None:
    """Sign the staged targets and publish them once the targets threshold is met.

    Default key: update-signing. With nothing staged, re-signs the published targets
    with a fresh expiry.
    """
    repo = UpdateRepository(fleet_dir, keys_dir=keys_dir)
    names = key_names or (UPDATE_SIGNING_KEY,)
    signers = _signers(repo, names)
    _outcome(repo.publish(signers, _server_secret(fleet_dir)), fleet_dir)


@update.command("sign")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.argument("role", type=click.Choice(["root", "targets"]))
@click.option("--key", "key_names", multiple=True, metavar="NAME", required=True,
              help="The offline key that signs (repeat for several holders).")
@_KEYS
def sign_command(fleet_dir: Path, role: str, key_names: tuple[str, ...],
                 keys_dir: Path | None) -> None:
    """Add a holder's signature to the pending ROLE metadata; publish at the threshold."""
    repo = UpdateRepository(fleet_dir, keys_dir=keys_dir)
    signers = _signers(repo, key_names)
    _outcome(repo.sign(role, signers, _server_secret(fleet_dir)), fleet_dir)


def _propose(fleet_dir: Path, keys_dir: Path | None, change: RootChange,
             key_names: tuple[str, ...]) -> None:
    repo = UpdateRepository(fleet_dir, keys_dir=keys_dir)
    planned = repo.planned_key_names(change)
    new_secrets = {name: _secret(name, new=True) for name, role in planned
                   if role in ("root", "targets")}
    server = _server_secret(fleet_dir)
    md = repo.propose_root(change, new_secrets, server)
    made = ", ".join(name for name, _ in planned) or "none"
    click.echo(f"proposed root version {md.signed.version} (new keys: {made}); it needs the "
               "thresholds of the current and the new root")
    if key_names:
        _outcome(repo.sign("root", _signers(repo, key_names), server), fleet_dir)
    else:
        click.echo(f"sign it: tinyward update sign {fleet_dir} root --key NAME")


@update.command("rotate-root")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.option("--replace", multiple=True, metavar="NAME",
              help="Retire this key and make a fresh one of the same role (repeat).")
@click.option("--add-key", "add", multiple=True,
              type=click.Choice(["root", "targets", "snapshot", "timestamp"]),
              help="Add a new key to this role (repeat).")
@click.option("--remove", multiple=True, metavar="NAME", help="Retire this key (repeat).")
@click.option("--root-threshold", type=int, default=None)
@click.option("--targets-threshold", type=int, default=None)
@_SIGN_KEYS
@_KEYS
def rotate_root_command(fleet_dir: Path, replace: tuple[str, ...], add: tuple[str, ...],
                        remove: tuple[str, ...], root_threshold: int | None,
                        targets_threshold: int | None, key_names: tuple[str, ...],
                        keys_dir: Path | None) -> None:
    """Propose the next root (keys, thresholds, a fresh expiry) for threshold signing.

    With no change it only renews the root's expiry. Each root key holder then signs:
    `tinyward update sign FLEET root --key NAME`; it is published once signed by the
    thresholds of both the current and the new root.
    """
    _propose(fleet_dir, keys_dir, RootChange(replace, add, remove, root_threshold,
                                             targets_threshold), key_names)


@update.command("rotate-online")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@_SIGN_KEYS
@_KEYS
def rotate_online_command(fleet_dir: Path, key_names: tuple[str, ...],
                          keys_dir: Path | None) -> None:
    """Replace the online snapshot and timestamp keys (through a root rotation)."""
    repo = UpdateRepository(fleet_dir, keys_dir=keys_dir)
    status = repo.status()
    online = tuple(k["name"] for k in status["keys"] if k["online"] and k["in_root"])
    _propose(fleet_dir, keys_dir, RootChange(replace=online), key_names)


@update.command("refresh")
@click.argument("fleet_dir", type=_EXISTING_DIR)
def refresh_command(fleet_dir: Path) -> None:
    """Re-sign snapshot and timestamp if needed (what the running server does)."""
    done = UpdateRepository(fleet_dir).refresh_online(datetime.now(UTC),
                                                      _server_secret(fleet_dir))
    click.echo(f"re-signed: {', '.join(done)}" if done else "nothing to re-sign")


@update.command("status")
@click.argument("fleet_dir", type=_EXISTING_DIR)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(fleet_dir: Path, as_json: bool) -> None:
    """Published targets and versions, each role's expiry and signatures vs threshold.

    Ends with an error (exit 2) when a published role has expired or lacks its
    threshold: devices refuse the repository until it is re-signed.
    """
    status = UpdateRepository(fleet_dir).status()
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True))
    else:
        _print_status(status)
    _refuse_unusable(status)


def _refuse_unusable(status: dict[str, Any]) -> None:
    from tinyward.fleet.update_repo import MetadataExpired, ThresholdNotMet

    expired = [role for role, info in status["roles"].items() if info["expired"]]
    if expired:
        hint = ("`tinyward update rotate-root`" if "root" in expired else
                "`tinyward update publish`" if "targets" in expired else
                "`tinyward update refresh` (or a running server)")
        raise MetadataExpired(f"expired: {', '.join(expired)}; devices refuse the repository "
                              f"until it is re-signed: {hint}")
    short = [role for role, info in status["roles"].items()
             if info["signatures"] < info["threshold"]]
    if short:
        raise ThresholdNotMet(f"below threshold: {', '.join(short)}; devices refuse it")


def _print_status(status: dict[str, Any]) -> None:
    for role, info in status["roles"].items():
        flag = " EXPIRED" if info["expired"] else ""
        where = "online" if info["online"] else "offline"
        click.echo(f"{role:9} v{info['version']:<4} expires {info['expires']}{flag}  "
                   f"signatures {info['signatures']}/{info['threshold']} ({where}: "
                   f"{', '.join(info['keys'])})")
    for target in status["targets"]:
        custom = target["custom"] or {}
        click.echo(f"target {target['path']}  {target['length']} bytes  "
                   f"{custom.get('component')} {custom.get('version')} for "
                   f"{custom.get('product_class')}")
    for role, info in status["pending"].items():
        click.echo(f"pending {role} v{info['version']}: signed by "
                   f"{', '.join(info['signed_by']) or 'nobody'}, {info['missing']} more needed")


@update.group("keys")
def keys_group() -> None:
    """The repository's keys."""


@keys_group.command("list")
@click.argument("fleet_dir", type=_EXISTING_DIR)
def keys_list_command(fleet_dir: Path) -> None:
    """Every key: name, role, online or offline, whether the current root uses it."""
    for key in UpdateRepository(fleet_dir).status()["keys"]:
        state = "in root" if key["in_root"] else "retired or proposed"
        click.echo(f"{key['name']:15} {key['role']:9} "
                   f"{'online ' if key['online'] else 'offline'} {state:20} {key['keyid'][:16]}")
