"""`tinyward attest verify`: check a device's attestation token against a fleet."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tinyward.bench.token import bench_token
from tinyward.errors import BadInput
from tinyward.fleet.attestation import verify_fleet_token
from tinyward.fleet.pki import Fleet
from tinyward.trust.attestation import claims_to_json
from tinyward.trust.errors import BadClaim
from tinyward.trust.psa_claims import (
    KEY_TINYWARD_OPERATING_MODE,
    KEY_TINYWARD_PROTECTIONS,
    PsaClaims,
)

MAX_TOKEN_FILE_BYTES = 64 * 1024


@click.group()
def attest() -> None:
    """Verify attestation tokens (what a device says it runs, signed by its attestation key)."""


@attest.command("verify")
@click.argument("token_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--fleet", "fleet_dir", required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="The fleet whose devices you trust.")
@click.option("--nonce", required=True, help="The challenge you sent, as hex (32, 48 or 64 bytes).")
@click.option("--expect-mode", type=click.Choice(["connected", "air-gapped"]), default=None,
              help="Refuse the token unless it claims this operating mode (claim -70001).")
@click.option("--expect-protection", "expect_protections", multiple=True,
              help="Refuse the token unless it claims this protection in force (claim -70002), "
                   "e.g. 'filesystem isolation' or 'air gap: seccomp network filter'; repeatable.")
def verify_command(token_file: Path, fleet_dir: Path, nonce: str, expect_mode: str | None,
                   expect_protections: tuple[str, ...]) -> None:
    """Verify TOKEN_FILE and print its claims as JSON; exit 0 only when it is valid.

    Checks: a well-formed PSA token (RFC 9783); the device is enrolled in this fleet and not
    revoked; its attestation certificate chains to the fleet; the signature; the nonce; then
    the mode and protections you expect, if you name them.
    """
    from tinyward.cli._nonce import hex_nonce

    with token_file.open("rb") as handle:
        token = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    if len(token) > MAX_TOKEN_FILE_BYTES:
        raise BadInput(f"{token_file} is larger than {MAX_TOKEN_FILE_BYTES} bytes: not a token")
    fleet = Fleet.open(fleet_dir)
    try:
        enrolled, claims = verify_fleet_token(fleet, token, hex_nonce(nonce))
        _check_expectations(claims, expect_mode, expect_protections)
    except BadInput as error:
        click.secho(f"token refused: {error}", fg="red", err=True)
        sys.exit(error.exit_code)
    click.echo(json.dumps({"valid": True, "device_id": enrolled.device_id,
                           "fleet_id": fleet.fleet_id, "claims": claims_to_json(claims)}, indent=2))


def _check_expectations(claims: PsaClaims, mode: str | None, protections: tuple[str, ...]) -> None:
    if mode is not None and claims.operating_mode != mode:
        raise BadClaim("operating_mode", KEY_TINYWARD_OPERATING_MODE,
                       f"is {claims.operating_mode!r}; the verifier expects {mode!r}")
    missing = sorted(set(protections) - set(claims.protections or ()))
    if missing:
        raise BadClaim("protections", KEY_TINYWARD_PROTECTIONS,
                       f"does not name {', '.join(repr(m) for m in missing)} as in force")


COMMANDS: list[click.Command] = [attest]
BENCH_COMMANDS: list[click.Command] = [bench_token]
