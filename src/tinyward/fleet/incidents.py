"""Fleet-raised incidents: the quiet-device detector.

A device that misses its declared schedule (``FleetDirectory.report_interval``; a device
enrolled before schedules were recorded declared none, and is never quiet) is an incident
too: it went quiet (:func:`tinyward.fleet.devstate.device_state` says ``quiet``: no report
for more than max(3 × interval, interval + grace) seconds). Unplugged, jammed, crashed, or
captured and silenced: the fleet cannot tell which, only that its sensor stopped talking.

:class:`QuietWatch` decides (pure: no I/O, no clock); :class:`QuietDetector` drives it
over the fleet's records and store, one bounded slice per tick:

- each tick looks at most ``batch`` devices (a cursor over the enrolled device IDs,
  listed once per full pass), so a fleet of 100,000 devices costs the same per tick as one
  of 500, and a full pass takes ceil(N / batch) ticks;
- a device found quiet gets one ``quiet`` incident per silence (evidence: how long, and
  its schedule); it is remembered, so later ticks raise nothing more; a report clears it
  (the next tick that finds it ``ok`` or ``degraded``), and a new silence raises again;
- after a restart the memory is empty: before raising, the store is asked whether a
  ``quiet`` incident for the device was already raised after its last report (then it is
  the same silence, and nothing is raised again).

Revoked, quarantined and never-seen devices are not quiet (their own states).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tinyward.fleet.devstate import device_state
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.store import DeviceStatus, ReportStore
from tinyward.trust.identity import is_device_id

if TYPE_CHECKING:
    from tinyward.fleet.store import Incident

QUIET = "quiet"
#: Devices looked at per tick.
QUIET_BATCH = 500
#: Seconds between two ticks of ``fleet serve``'s detector.
QUIET_TICK = 5.0

_log = logging.getLogger("tinyward.fleet.incidents")


@dataclass
class QuietWatch:
    """Which devices to look at next, and whether a state raises or clears."""

    batch: int = QUIET_BATCH
    quiet: set[str] = field(default_factory=set)
    #: Full passes over the fleet completed; whether the last slice began a new pass.
    passes: int = 0
    new_pass: bool = False
    _ids: list[str] = field(default_factory=list)
    _cursor: int = 0

    def next_slice(self, list_ids: Callable[[], Sequence[str]]) -> list[str]:
        """The next ``batch`` device IDs; ``list_ids`` is called at the start of each pass."""
        self.new_pass = self._cursor >= len(self._ids)
        if self.new_pass:
            self._ids, self._cursor = sorted(list_ids()), 0
            self.quiet &= set(self._ids)  # forget removed devices
        chunk = self._ids[self._cursor:self._cursor + self.batch]
        self._cursor += len(chunk)
        if self._cursor >= len(self._ids):
            self.passes += 1
        return chunk

    @property
    def listed(self) -> frozenset[str]:
        """The device IDs of the current pass."""
        return frozenset(self._ids)

    def passes_for(self, devices: int) -> int:
        """Ticks for one full pass over ``devices`` devices."""
        return max(1, math.ceil(devices / self.batch))

    def saw(self, device_id: str, state: str) -> str | None:
        """``"raise"`` (newly quiet), ``"clear"`` (quiet no longer) or None (no change).
        A "raise" is confirmed with :meth:`raised`, after the store was asked."""
        if state == QUIET:
            return None if device_id in self.quiet else "raise"
        if device_id in self.quiet:
            self.quiet.discard(device_id)
            return "clear"
        return None

    def raised(self, device_id: str) -> None:
        self.quiet.add(device_id)


def quiet_evidence(status: DeviceStatus, interval: float, now: float) -> str:
    return (f"no report for {now - status.last_received_at:.0f} s (schedule {interval:g} s, "
            f"last seq {status.last_seq})")


class QuietDetector:
    """Runs :class:`QuietWatch` over a fleet: :meth:`tick` reads (``reader``: the admin
    connection), :meth:`raise_quiet` writes (``store``: call it on the store's thread).

    The server counts, logs and alerts what :meth:`raise_quiet` returns."""

    def __init__(self, directory: FleetDirectory, reader: ReportStore, *,
                 batch: int = QUIET_BATCH, grace: float | None = None) -> None:
        self.directory, self.reader = directory, reader
        self.grace = grace
        self.watch = QuietWatch(batch)
        #: Each device's state as its latest slice found it (the metrics' gauge reads it
        #: once a full pass is done: no store reads per scrape).
        self.states: dict[str, str] = {}

    def ids(self) -> list[str]:
        """The enrolled device IDs (names of the fleet's device folders: no file read)."""
        try:
            return [p.name for p in self.directory.fleet.devices_path.iterdir()
                    if is_device_id(p.name)]
        except OSError:
            return []

    def state(self, device_id: str, now: float
              ) -> tuple[str, DeviceStatus | None, float | None]:
        revoked = self.directory.is_revoked(device_id)  # also refreshes the cached schedule
        quarantined = self.directory.is_quarantined(device_id)
        # Only a declared schedule can be missed (devstate: None is never quiet).
        interval = self.directory.report_interval(device_id)
        status = self.reader.device_status(device_id)
        extra = {} if self.grace is None else {"grace": self.grace}
        return device_state(status, revoked=revoked, quarantined=quarantined, now=now,
                            interval=interval, **extra), status, interval

    def tick(self, now: float) -> list[tuple[str, str]]:
        """One slice: the devices newly quiet, as (device ID, evidence), to be raised with
        :meth:`raise_quiet`; devices heard from again are cleared here."""
        due = []
        chunk = self.watch.next_slice(self.ids)
        if self.watch.new_pass:  # forget removed devices
            listed = self.watch.listed
            self.states = {d: s for d, s in self.states.items() if d in listed}
        for device_id in chunk:
            state, status, interval = self.state(device_id, now)
            self.states[device_id] = state
            change = self.watch.saw(device_id, state)
            if change == "clear":
                _log.info("device %s reports again (no longer quiet)", device_id[:8])
            elif change == "raise" and status is not None and interval is not None:
                if self._already_raised(device_id, status):
                    self.watch.raised(device_id)  # the same silence, raised before a restart
                else:
                    due.append((device_id, quiet_evidence(status, interval, now)))
        return due

    def _already_raised(self, device_id: str, status: DeviceStatus) -> bool:
        last = self.reader.incidents(device_id, since=int(status.last_received_at),
                                     kind=QUIET, limit=1)
        return bool(last)

    def raise_quiet(self, store: ReportStore, device_id: str, evidence: str,
                    now: float) -> Incident:
        incident = store.add_incident(device_id, QUIET, int(now), evidence)
        self.watch.raised(device_id)
        return incident
