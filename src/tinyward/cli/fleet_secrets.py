"""The fleet's passphrases, one per key role, read from the environment or a prompt.

The one place the CLI reads them (``fleet``, ``fleet serve`` and ``device provision`` all
come here). Each role has its own variable, so that the server's environment never holds
a CA or update secret:

- ``TINYWARD_CA_PASSPHRASE``: root and device CA keys (init, enroll, provision, rotations)
- ``TINYWARD_UPDATE_PASSPHRASE``: the update-signing key (init, migrate, releases)
- ``TINYWARD_SERVER_PASSPHRASE``: the server's TLS key (init, serve), if it is sealed
- ``TINYWARD_FLEET_PASSPHRASE``: the one passphrase of the old format (migrate only)
- ``TINYWARD_UPDATE_KEY_<NAME>_PASSPHRASE``: each offline key of the update repository
  (``TINYWARD_UPDATE_KEY_ROOT_2_PASSPHRASE`` for key ``root-2``; ``tinyward update``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import click

from tinyward.errors import Misuse
from tinyward.fleet.errors import WeakPassphrase
from tinyward.fleet.passphrase import check_new_passphrase


@dataclass(frozen=True)
class Role:
    name: str
    env: str
    what: str


CA = Role("CA", "TINYWARD_CA_PASSPHRASE", "opens the root and device CA keys")
UPDATE = Role("update", "TINYWARD_UPDATE_PASSPHRASE", "opens the update-signing key")
SERVER = Role("server", "TINYWARD_SERVER_PASSPHRASE", "opens the server's TLS key")
OLD = Role("old fleet", "TINYWARD_FLEET_PASSPHRASE", "the old format's one passphrase")

#: Secrets `fleet serve` refuses to have in its environment: taking the server must not
#: give the CA or the update key (nor, for an old fleet, every key at once).
NOT_FOR_THE_SERVER = (CA, UPDATE, OLD)


#: Prefix of the per-key variables of the update repository's offline keys.
UPDATE_KEY_PREFIX = "TINYWARD_UPDATE_KEY_"


def update_key_role(name: str) -> Role:
    """The role of the update repository's offline key ``name`` (e.g. ``root-2``)."""
    env = f"{UPDATE_KEY_PREFIX}{name.upper().replace('-', '_')}_PASSPHRASE"
    return Role(f"update key {name}", env, f"opens the update repository key {name}")


def read_secret(role: Role, new: bool = False) -> bytes:
    """``role``'s passphrase from its variable, or asked for without echo.

    A new one is checked against the rule of :mod:`tinyward.fleet.passphrase`.

    Raises:
        WeakPassphrase: empty, or (new) breaks the rule.
    """
    text = os.environ.get(role.env)
    if text is None:
        text = click.prompt(
            f"New {role.name} passphrase" if new else f"{role.name} passphrase ({role.env})",
            hide_input=True,
            confirmation_prompt="Repeat the passphrase" if new else False,
        )
    if not text:
        raise WeakPassphrase(f"the {role.name} passphrase ({role.env}) is empty")
    if new:
        check_new_passphrase(text, role.name)
    return text.encode("utf-8")


def refuse_foreign_secrets() -> None:
    """Stop the server from starting with a CA or update secret in its environment.

    Raises:
        Misuse: one of :data:`NOT_FOR_THE_SERVER` is set.
    """
    present = [role.env for role in NOT_FOR_THE_SERVER if role.env in os.environ]
    present += sorted(env for env in os.environ if env.startswith(UPDATE_KEY_PREFIX))
    if present:
        raise Misuse(
            f"`fleet serve` refuses to run with {', '.join(present)} in its environment: the "
            "internet-facing server must not hold a CA or update secret. Unset it; the "
            f"server needs only {SERVER.env} (or nothing, for a server key kept in clear)"
        )
