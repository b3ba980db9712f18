"""A tinyward device's one login: its local readout (a PIN or TOTP code, docs/readout.md).

A tinyward device offers no network login, but its display asks for a code, and that is
a login like any other for I-CRED-1 (no default) and I-AUTH-1 (lockout across restarts).
When the target is a tinyward device folder with a readout credential, the credentials and
lockout-restart probes add this evidence, live, through the device's own gate
(:class:`tinyward.trust.readout.ReadoutGate` over the folder's protected storage), as an
evaluator at the display would type:

- **defaults** (I-CRED-1): at most :data:`MAX_DEFAULTS` well-known PINs, fewer than the
  gate's free attempts (so the owner is never locked out by this check); any accepted
  fails, naming it; all refused passes this part;
- **lockout** (I-AUTH-1): random wrong codes until the gate locks (at most
  :data:`MAX_GUESSES`), then the device is opened again from its folder — what a restart
  or a power cut leaves — and one more code is tried: still locked passes; checked again
  fails (the count lived in memory); never locked fails. The check leaves the readout
  locked for the policy's delay, as the network lockout probe leaves a login.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from tinyward.assess.evidence import Evidence

#: Vendors' habitual PINs the gate's own rule lets through (6+ digits, 3+ different).
DEFAULT_PINS = ("123456", "12345678", "654321", "87654321")
MAX_DEFAULTS = 4
MAX_GUESSES = 12


@dataclass(frozen=True)
class DefaultsTried:
    tried: int
    accepted: str | None = None
    note: str = ""  # why nothing was tried


@dataclass(frozen=True)
class LockoutSeen:
    checked: int  # wrong codes the gate checked before it locked
    locked: bool
    locked_after_restart: bool | None = None  # None: not reached
    note: str = ""


def defaults_evidence(seen: DefaultsTried, where: str) -> Evidence | None:
    """I-CRED-1's readout part (pure); None when there was nothing to try."""
    if seen.accepted is not None:
        return Evidence("I-CRED-1", "fail", "live", "credentials",
                        f"the local readout accepts the well-known PIN {seen.accepted!r}", where)
    if seen.tried == 0:
        return None if not seen.note else Evidence(
            "I-CRED-1", "not-tested", "live", "credentials", f"local readout: {seen.note}",
            where)
    return Evidence("I-CRED-1", "pass", "live", "credentials",
                    f"the local readout refused {seen.tried} well-known PINs", where)


def lockout_evidence(seen: LockoutSeen, where: str) -> Evidence:
    """I-AUTH-1 from the readout (pure)."""
    if seen.note:
        return Evidence("I-AUTH-1", "not-tested", "live", "lockout-restart",
                        f"local readout: {seen.note}", where)
    if not seen.locked:
        return Evidence("I-AUTH-1", "fail", "live", "lockout-restart",
                        f"the local readout checked {seen.checked} wrong codes in a row "
                        "without locking", where)
    found = f"the local readout locked after {seen.checked} wrong code(s)"
    if seen.locked_after_restart is None:
        return Evidence("I-AUTH-1", "not-tested", "live", "lockout-restart",
                        f"{found}; the restart was not reached", where)
    if seen.locked_after_restart:
        return Evidence("I-AUTH-1", "pass", "live", "lockout-restart",
                        f"{found}, and was still locked when the device was opened again "
                        "from its storage (a restart); the only login, no network one "
                        "(a scan decides that)", where)
    return Evidence("I-AUTH-1", "fail", "live", "lockout-restart",
                    f"{found}, but checked a code again after a restart", where)


def _gate(folder: Path):  # type: ignore[no-untyped-def]
    from tinyward.trust.device import Device
    from tinyward.trust.readout import ReadoutGate

    device = Device.open(folder)
    gate = ReadoutGate(device.storage, "assessment")
    return gate if gate.status().kind is not None else None


def has_readout(folder: Path | None) -> bool:
    if folder is None or not (folder / "device.json").is_file():
        return False
    from tinyward.errors import TinywardError

    try:
        return _gate(folder) is not None
    except TinywardError:
        return False


def try_defaults(folder: Path) -> DefaultsTried:
    from tinyward.trust.lockout import LockedOut
    from tinyward.trust.readout import WrongCode

    gate = _gate(folder)
    if gate is None:
        return DefaultsTried(0)
    status = gate.status()
    if status.wait_seconds > 0:
        return DefaultsTried(0, note=f"locked for {status.wait_seconds:.0f} s more")
    if status.kind != "pin":
        return DefaultsTried(0, note=f"a {status.kind} code: no default to try")
    # Stay below the free attempts, counting failures already there.
    room = gate.policy().free_attempts - status.failures - 1
    tried = 0
    for pin in DEFAULT_PINS[:max(0, min(MAX_DEFAULTS, room))]:
        tried += 1
        try:
            gate.attempt(pin)
        except WrongCode:
            continue
        except LockedOut:
            return DefaultsTried(tried - 1, note="locked before every default was tried")
        return DefaultsTried(tried, pin)
    if tried == 0:
        return DefaultsTried(0, note="too few free attempts left to try defaults")
    return DefaultsTried(tried)


def try_lockout(folder: Path) -> LockoutSeen:
    from tinyward.trust.lockout import LockedOut
    from tinyward.trust.readout import WrongCode

    gate = _gate(folder)
    if gate is None:
        return LockoutSeen(0, False, note="no readout credential")
    checked = 0
    locked = False
    for _ in range(MAX_GUESSES):
        try:
            gate.attempt(f"{secrets.randbelow(10**9):09d}")  # 9 digits: never a PIN or TOTP
        except WrongCode:
            checked += 1
            continue
        except LockedOut:
            locked = True
            break
        return LockoutSeen(checked, False, note="a random code was accepted")
    if not locked:
        return LockoutSeen(checked, False)
    again = _gate(folder)  # opened afresh from the folder, as after a restart
    if again is None:
        return LockoutSeen(checked, True, note="the credential vanished on reopening")
    try:
        again.attempt(f"{secrets.randbelow(10**9):09d}")
    except LockedOut:
        return LockoutSeen(checked, True, True)
    except WrongCode:
        return LockoutSeen(checked, True, False)
    return LockoutSeen(checked, True, note="a random code was accepted")


__all__ = ["DEFAULT_PINS", "DefaultsTried", "LockoutSeen", "defaults_evidence",
           "has_readout", "lockout_evidence", "try_defaults", "try_lockout"]
