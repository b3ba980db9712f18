"""pin-mitm (live): the device, pointed at an impostor server, must send it nothing (I-PIN-1).

The device's own client runs (``--device-command``: an argv with ``{server}`` where the
server URL goes, e.g. ``tinyward device run DIR --server {server} --duration 3``) against
:class:`tinyward.assess.attacks.rogue_server.RogueServer` on loopback, twice:

- **other CA**: a valid certificate from a CA the device does not trust
  (:func:`tinyward.assess.attacks.certificates.server_credentials_other_ca`);
- **right CA, wrong key**: a certificate from the device's own CA for a key that is not
  pinned (``--mitm-cert``: the manufacturer issues one for the assessment; the tinyward
  lab makes it with :func:`tinyward.assess.attacks.certificates.server_credentials_wrong_key`).

Refused means the impostor received no application byte. Pass needs both refused: the
other-CA attack alone shows chain validation, not pinning, so without ``--mitm-cert`` the
verdict is not-tested. A device that never connected leaves its attack not-tested.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from tinyward.assess.attacks.certificates import server_credentials_other_ca
from tinyward.assess.attacks.rogue_server import RogueServer
from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "pin-mitm"
SECONDS_PER_RUN = 30.0


@dataclass(frozen=True)
class MitmRun:
    """One attack: ``connections`` the impostor accepted, ``handshakes`` completed,
    application ``bytes_received``."""

    attack: str
    connections: int
    handshakes: int
    bytes_received: int
    note: str = ""


def verdict(runs: list[MitmRun], context: Context) -> list[Evidence]:
    """Fail if any impostor got a byte; pass only if both attacks ran and were refused."""
    for run in runs:
        if run.bytes_received > 0:
            return for_all(context, NAME, "fail", "live",
                           f"{run.attack}: the device completed {run.handshakes} handshake(s) "
                           f"and sent {run.bytes_received} bytes to the impostor")
    parts = []
    for run in runs:
        if run.connections == 0:
            parts.append(f"{run.attack}: the device never connected"
                         f"{' (' + run.note + ')' if run.note else ''}")
        else:
            parts.append(f"{run.attack}: refused ({run.connections} connection(s), "
                         f"{run.handshakes} handshake(s) completed, 0 bytes sent)")
    attacks = {run.attack for run in runs if run.connections > 0}
    if attacks >= {"other CA", "right CA, wrong key"}:
        return for_all(context, NAME, "pass", "live", "; ".join(parts))
    if "right CA, wrong key" not in {run.attack for run in runs}:
        parts.append("pinning is shown only by a certificate from the device's own CA for "
                     "another key (--mitm-cert)")
    return for_all(context, NAME, "not-tested", "live", "; ".join(parts))


def attack(command: tuple[str, ...], cert: Path, key: Path, name: str,
           seconds: float) -> MitmRun:
    with RogueServer(cert, key) as rogue:
        argv = [part.replace("{server}", rogue.url) for part in command]
        note = ""
        try:
            subprocess.run(argv, capture_output=True, timeout=seconds, check=False)  # noqa: S603 - the user's own device command
        except subprocess.TimeoutExpired:
            note = f"the device command ran past {seconds:.0f} s and was stopped"
        except OSError as error:
            note = f"the device command did not start: {error}"
        return MitmRun(name, rogue.connections, rogue.handshakes, rogue.bytes_received, note)


class PinMitm:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        if target.device_command is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no --device-command to point the device at an impostor")
        runs = []
        with TemporaryDirectory(prefix="tinyward-mitm-") as scratch:
            cert, key = server_credentials_other_ca(Path(scratch))
            runs.append(attack(target.device_command, cert, key, "other CA",
                               min(SECONDS_PER_RUN, budget.left())))
            if target.mitm_cert is not None and budget.spend():
                runs.append(attack(target.device_command, *target.mitm_cert,
                                   "right CA, wrong key", min(SECONDS_PER_RUN, budget.left())))
        return verdict(runs, context)


__all__ = ["MitmRun", "PinMitm", "attack", "verdict"]
