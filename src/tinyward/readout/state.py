"""The results an air-gapped device keeps for its display (protected storage record)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from tinyward.trust.errors import RecordTampered
from tinyward.trust.storage import ProtectedStorage

RECORD = "readout.latest"
KEEP_RESULTS = 8


@dataclass(frozen=True)
class DisplayState:
    """What the display shows once unlocked: the newest results, incidents and health."""

    updated_at: int = 0
    results: tuple[Mapping[str, Any], ...] = ()
    incidents: Mapping[str, int] = field(default_factory=dict)
    health: str = "ok"
    #: the mode enforced in the process that produced these results (tried there); a
    #: device that never ran air-gapped has no evidence of it, so "connected"
    mode: str = "connected"


def stated_mode(directory: Path, state: DisplayState) -> str:
    """The mode the readout states: the running instance's (enforced, tried by it) if the
    device runs now, else the one enforced when ``state``'s results were made."""
    from tinyward.trust.instance import running_instance

    running = running_instance(directory)
    mode = running.mode if running is not None else state.mode
    return mode if mode in ("connected", "air-gapped") else "connected"


def save(storage: ProtectedStorage, state: DisplayState) -> None:
    storage.write(RECORD, cbor2.dumps({
        "t": state.updated_at, "res": [dict(r) for r in state.results[-KEEP_RESULTS:]],
        "inc": dict(state.incidents), "health": state.health, "mode": state.mode,
    }))


def load(storage: ProtectedStorage) -> DisplayState:
    """The stored state, or an empty one if the device has produced nothing yet."""
    if not storage.exists(RECORD):
        return DisplayState()
    data = cbor2.loads(storage.read(RECORD))
    if not isinstance(data, dict):
        raise RecordTampered(f"{RECORD} has an unexpected shape")
    return DisplayState(int(data["t"]), tuple(data["res"]), dict(data["inc"]), str(data["health"]),
                        str(data["mode"]))
