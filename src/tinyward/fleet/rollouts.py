"""Where a fleet keeps its rollouts, and the I/O around :mod:`tinyward.fleet.rollout`.

Rollouts live in ``FLEET_DIR/updates/rollouts.json`` (atomic writes), not in the report
database, because:

- they are an operator's decisions about the fleet's signed targets, like cohorts and
  schedules (the device status files) and the TUF repository beside them
  (``FLEET_DIR/updates/repo``): one backup of the fleet folder holds them all, and
  ``tinyward rollout …`` works without the server or a database URL;
- a device's hot path (the offer it gets when it asks for updates) reads them through a
  ``stat`` of the file (re-read only when it changes, like the status files), in every
  server worker process, with no database round trip.

Every change (CLI, admin API, automatic halt) is a read-modify-write of the whole file
under an ``flock`` on ``FLEET_DIR/updates/.rollouts.lock``, so two writers (the CLI and a
server halting the same rollout) never lose each other's change. What the devices
report (update states, failures) stays in the report store, which the halt rule reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tinyward._fsutil import atomic_write, make_private_dir
from tinyward.errors import BadInput
from tinyward.fleet.errors import BadRollout
from tinyward.fleet.rollout import (
    ROLLOUT_FORMAT,
    Observation,
    Rollout,
    Tally,
    check_no_conflict,
    evaluate,
    find,
    is_complete,
    offer_for,
    tally,
)
from tinyward.fleet.store import ReportStore, UpdateRecord
from tinyward.update.meta import Offer, Version

UPDATES_DIR = "updates"
REPOSITORY_METADATA = "repo/metadata"
ROLLOUTS_FILE = "rollouts.json"
_LOCK_FILE = ".rollouts.lock"
MAX_ROLLOUTS = 1000
_MAX_FILE = 4 * 1024 * 1024


def published_target(fleet_dir: Path, target_path: str) -> tuple[str, str] | None:
    """``(component, version)`` of a target in the fleet's TUF repository, from its signed
    custom metadata (the newest ``N.targets.json`` in ``FLEET_DIR/updates/repo/metadata``);
    None if the fleet has no repository yet.

    Raises:
        BadRollout: the repository has no such target, or its metadata says no component
            and version.
    """
    from tuf.api.metadata import Metadata
    from tuf.api.serialization import DeserializationError

    from tinyward.fleet.update_keys import read_regular
    from tinyward.update.meta import TargetMeta

    folder = Path(fleet_dir) / UPDATES_DIR / REPOSITORY_METADATA
    numbered = sorted((int(p.name.split(".", 1)[0]), p) for p in folder.glob("*.targets.json")
                      if p.name.split(".", 1)[0].isdigit())
    path = numbered[-1][1] if numbered else folder / "targets.json"
    try:
        data = read_regular(path, _MAX_FILE)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise BadRollout(f"{path} cannot be read as TUF targets metadata ({error})") from None
    try:
        signed = Metadata.from_bytes(data).signed
    except (DeserializationError, ValueError) as error:
        raise BadRollout(f"{path} cannot be read as TUF targets metadata ({error})") from None
    found = getattr(signed, "targets", {}).get(target_path)
    if found is None:
        raise BadRollout(f"the fleet's repository has no target {target_path[:80]!r} "
                         "(`tinyward update status FLEET` lists them)")
    try:
        meta = TargetMeta.from_custom(found.custom)
    except BadInput as error:
        raise BadRollout(f"target {target_path[:80]!r}: {error}") from None
    return meta.component, str(meta.version)


class DeviceFacts(Protocol):
    """What the halt rule needs to know about a device beyond its reports
    (:class:`tinyward.fleet.directory.FleetDirectory` implements it)."""

    def report_key(self, device_id: str) -> object | None: ...

    def is_revoked(self, device_id: str) -> bool: ...

    def cohort(self, device_id: str) -> str | None: ...


@dataclass(frozen=True)
class RolloutStatus:
    """A rollout and its tally, for people and the admin API."""

    rollout: Rollout
    counted: Tally

    def to_json(self) -> dict[str, Any]:
        return {**self.rollout.to_json(), "members": self.counted.members,
                "outcomes": self.counted.outcomes, "states": self.counted.states,
                "failure_share": round(self.counted.failure_share, 4),
                "complete": is_complete(self.rollout, self.counted)}


def observations(rollout: Rollout, records: Iterable[UpdateRecord],
                 enrolled: Iterable[tuple[str, str | None, bool]] = (),
                 facts: DeviceFacts | None = None) -> list[Observation]:
    """One :class:`Observation` per device: from the store's ``records`` (devices that
    reported an update state) and ``enrolled`` ``(device ID, cohort, revoked)`` (every
    device, for the status; devices without reports are waiting). Devices only in
    ``records`` get their cohort and revocation from ``facts``."""
    known = {device_id: (cohort, revoked) for device_id, cohort, revoked in enrolled}
    seen: dict[str, Observation] = {}
    parsed: dict[str, Version] = {}  # a fleet runs few versions: parse each once
    for record in records:
        if record.device_id in known:
            cohort, revoked = known[record.device_id]
        elif facts is not None and facts.report_key(record.device_id) is not None:
            revoked = facts.is_revoked(record.device_id)  # first: it refreshes the cohort
            cohort = facts.cohort(record.device_id)
        else:
            continue  # not enrolled here (any more): never counted
        installed = None
        if record.installed is not None:
            installed = parsed.get(record.installed)
            if installed is None:
                installed = parsed.setdefault(record.installed, Version.parse(record.installed))
        seen[record.device_id] = Observation(record.device_id, cohort, revoked, installed,
                                             record.state, record.failed_at)
    for device_id, (cohort, revoked) in known.items():
        seen.setdefault(device_id, Observation(device_id, cohort, revoked))
    return list(seen.values())


class RolloutBook:
    """The rollouts of one fleet folder (see the module docstring)."""

    def __init__(self, fleet_dir: Path, *, clock: Callable[[], float] = time.time,
                 audit: Callable[[str, str, str], None] | None = None) -> None:
        """``audit(action, rollout ID, outcome)`` is called for every change."""
        self.directory = Path(fleet_dir) / UPDATES_DIR
        self.path = self.directory / ROLLOUTS_FILE
        self._clock = clock
        self._audit = audit
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], tuple[Rollout, ...]] | None = None

    # -- reading --------------------------------------------------------------------------

    def rollouts(self) -> tuple[Rollout, ...]:
        """Every rollout, oldest first (re-read only when the file changed).

        Raises:
            BadRollout: the file is damaged.
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return ()
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        found = self._read()
        with self._lock:
            self._cached = (version, found)
        return found

    def _read(self) -> tuple[Rollout, ...]:
        from tinyward.fleet.update_keys import read_regular  # late: tuf, for the CLI

        try:
            # Not through a symlink, never blocking on a FIFO: the server reads it per offer.
            data = read_regular(self.path, _MAX_FILE)
        except FileNotFoundError:
            return ()
        except OSError as error:
            raise BadRollout(f"{self.path} is not a regular file ({error})") from None
        except ValueError:
            raise BadRollout(f"{self.path} is over {_MAX_FILE} bytes") from None
        try:
            document = json.loads(data)
        except ValueError:
            raise BadRollout(f"{self.path} is not JSON") from None
        if not isinstance(document, dict) or document.get("format") != ROLLOUT_FORMAT \
                or not isinstance(document.get("rollouts"), list):
            raise BadRollout(f"{self.path} is not a tinyward rollouts file ({ROLLOUT_FORMAT})")
        return tuple(Rollout.from_json(item) for item in document["rollouts"])

    def get(self, rollout_id: str) -> Rollout:
        """Raises UnknownRollout, BadRollout."""
        return find(self.rollouts(), rollout_id)

    def offer_for(self, device_id: str, cohort: str | None,
                  installed_versions: Mapping[str, str | Version]) -> Offer | None:
        """What to offer this device now (None: nothing). For the delivery channel."""
        return offer_for(self.rollouts(), device_id, cohort, installed_versions)

    # -- changing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[Rollout]]:
        """The rollouts, read fresh under the lock; the list as left is written back."""
        make_private_dir(self.directory)
        fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = list(self._read())
            before = list(current)
            yield current
            if current != before:
                if len(current) > MAX_ROLLOUTS:
                    raise BadRollout(f"a fleet keeps at most {MAX_ROLLOUTS} rollouts")
                document = {"format": ROLLOUT_FORMAT,
                            "rollouts": [rollout.to_json() for rollout in current]}
                atomic_write(self.path, json.dumps(document, indent=1).encode())
        finally:
            os.close(fd)  # releases the flock

    def _now(self) -> int:
        return int(self._clock())

    def _record(self, action: str, rollout: Rollout, outcome: str = "ok") -> None:
        if self._audit is not None:
            self._audit(action, rollout.rollout_id, outcome)

    def start(self, component: str, version: str, target_path: str, *,
              percent: float | None = None, cohorts: Iterable[str] = (),
              halt_at: float = 0.1, min_reports: int = 5) -> Rollout:
        """Start a rollout (see :meth:`Rollout.start`).

        When the fleet has an update repository, the target must be one of its signed
        targets, of this component and version (the admin API takes them from the body:
        a mismatch would offer one thing and count outcomes of another).

        Raises:
            BadRollout: bad arguments, or a target the repository does not have as this
                component and version. RolloutConflict: the component has a running one.
        """
        if isinstance(target_path, str) and len(target_path) <= 1200:
            published = published_target(self.directory.parent, target_path)
            if published is not None and published != (component, str(version)):
                raise BadRollout(f"the repository says target {target_path[:80]!r} is "
                                 f"{published[0]} {published[1]}, not {component} {version}")
        made = Rollout.start(component, version, target_path, now=self._now(),
                             percent=percent, cohorts=cohorts, halt_at=halt_at,
                             min_reports=min_reports)
        with self._locked() as current:
            check_no_conflict(current, made)
            current.append(made)
        self._record("start", made)
        return made

    def _change(self, rollout_id: str, action: str,
                change: Callable[[Rollout, int], Rollout]) -> Rollout:
        with self._locked() as current:
            old = find(current, rollout_id)
            new = change(old, self._now())
            current[current.index(old)] = new
        self._record(action, new)
        return new

    def widen(self, rollout_id: str, percent: float) -> Rollout:
        """Raises UnknownRollout, BadRollout, RolloutConflict (halted)."""
        return self._change(rollout_id, "widen", lambda r, now: r.widen(percent, now))

    def halt(self, rollout_id: str, why: str = "halted by an operator") -> Rollout:
        """Raises UnknownRollout."""
        return self._change(rollout_id, "halt", lambda r, now: r.halt(why, now))

    def resume(self, rollout_id: str) -> Rollout:
        """Raises UnknownRollout, RolloutConflict (not halted)."""
        return self._change(rollout_id, "resume", lambda r, now: r.resume(now))

    # -- the halt rule --------------------------------------------------------------------

    def evaluate(self, store: ReportStore, facts: DeviceFacts) -> list[Rollout]:
        """Apply the halt rule to every running rollout; return the ones halted now."""
        running = [r for r in self.rollouts() if not r.halted]
        if not running:
            return []
        to_halt: dict[str, Rollout] = {}
        for rollout in running:
            records = store.update_records(rollout.component, str(rollout.version))
            after, _ = evaluate(rollout, observations(rollout, records, facts=facts),
                                self._now())
            if after.halted:
                to_halt[rollout.rollout_id] = after
        if not to_halt:
            return []
        halted: list[Rollout] = []
        with self._locked() as current:
            for index, rollout in enumerate(current):
                new = to_halt.get(rollout.rollout_id)
                # Nobody changed it meanwhile: not halted, and not resumed since (a resume
                # opens a new window the evaluation above did not count).
                if new is not None and not rollout.halted \
                        and rollout.window_from == new.window_from:
                    current[index] = rollout.halt(new.why or "halted", new.halted_at or 0)
                    halted.append(current[index])
        for rollout in halted:
            self._record("auto-halt", rollout, "halted")
        return halted

    def status(self, store: ReportStore, enrolled: Iterable[tuple[str, str | None, bool]],
               rollout_id: str | None = None) -> list[RolloutStatus]:
        """Tallies of one rollout or all of them, over every enrolled device."""
        chosen = [self.get(rollout_id)] if rollout_id else list(self.rollouts())
        devices = list(enrolled)
        out = []
        for rollout in chosen:
            records = store.update_records(rollout.component, str(rollout.version))
            out.append(RolloutStatus(rollout, tally(rollout, observations(rollout, records,
                                                                          devices))))
        return out
