"""Apply a verified update target: slot, switch, trial, accept or revert (the I/O layer
around :mod:`tinyward.update.state`).

The delivery side (``update/client.py``) hands the agent a target file that TUF has
verified, its :class:`~tinyward.update.meta.TargetMeta` and TUF's length and hashes::

    agent = UpdateAgent.for_device(device, product_class="pump-sensor", health=HealthCheck())
    agent.on_start()                 # once per boot, before anything else: recovery
    outcome = agent.apply("app", path, meta, length, hashes)
    agent.status()                   # the report's ``upd``: {"state", "ver", "why"}

:meth:`UpdateAgent.apply` is :meth:`~UpdateAgent.stage` (installable? then write the
inactive slot) followed by :meth:`~UpdateAgent.activate` (check the slot again, switch,
trial, accept or revert). It returns an :class:`Outcome` for every end (accepted,
rejected, reverted, failed) and raises only for a caller's mistake
(:class:`~tinyward.update.errors.UpdateBusy`, ``Misuse``) or an unsafe slots folder
(:class:`~tinyward.update.errors.UnsafeSlots`). Anything else raised on the way ends the
update at rest (``failed``, why ``bug``; or a failed trial, reverted): the device is never
left busy, nor running a version it did not accept. One update at a time per slots
folder: the public steps hold its ``flock`` and read the state again from the record.

What is kept where (all in the device's protected storage, sealed and rollback-checked):

- ``update.slots``: the slot record (:class:`~tinyward.update.slots.SlotRecord`): active
  slot per component, what each slot holds, trial flag, the update state machine's
  record, and the slots folder's absolute path (another folder is refused). Writing it is
  the switch.
- ``update.counter.<component>``: the anti-rollback counter
  (:meth:`~tinyward.update.meta.Version.as_counter` of the highest *accepted* version).
  Raised only after the acceptance is recorded, so it never runs ahead of the running
  version; a target at or below it is refused as a rollback.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from tinyward import __version__
from tinyward.errors import Misuse
from tinyward.trust.errors import MeasurementError, RecordMissing, TrustError
from tinyward.trust.storage import ProtectedStorage
from tinyward.update.archive import ArchiveLimits, make_dir
from tinyward.update.errors import (
    BadTargetMeta,
    SlotCorrupt,
    TrialFailed,
    UnsafeSlots,
    UpdateBusy,
    UpdateIOError,
    UpdateRefused,
    UpdateStorageTampered,
)
from tinyward.update.health import HealthCheck, Verdict
from tinyward.update.meta import COMPONENTS, TargetMeta, Version
from tinyward.update.slots import (
    ComponentSlots,
    SlotInfo,
    SlotRecord,
    Slots,
    check_safe_folder,
    default_slots_dir,
)
from tinyward.update.state import BUG, INTERRUPTED, Action, Event, State, UpdateMachine

SLOT_RECORD = "update.slots"
#: RFC 9783 measurement types of the updatable components in attestation tokens.
MEASUREMENT_TYPES = {"app": "App", "model": "App_MODEL", "detector": "App_DETECTOR",
                     "config": "App_CONFIG"}
_BUSY = (State.DOWNLOADING, State.STAGED, State.TRIAL)
_VERDICT_EVENTS = {"crashed": Event.CRASHED, "deadline": Event.DEADLINE_PASSED}


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _exclusively(method: Callable[Concatenate[UpdateAgent, _P], _R]
                 ) -> Callable[Concatenate[UpdateAgent, _P], _R]:
    """Run ``method`` holding the slots folder's lock (see :meth:`UpdateAgent._exclusive`)."""
    def locked(self: UpdateAgent, /, *args: _P.args, **kw: _P.kwargs) -> _R:
        with self._exclusive():
            return method(self, *args, **kw)
    locked.__name__, locked.__doc__ = method.__name__, method.__doc__
    return locked


def _confirmed(slots: ComponentSlots) -> str | None:
    """The slot that runs: the active one, or, while the active one is on trial (a trial
    running now, or one a crash or a failed write cut short, which the next start
    reverts), the one before it. An unconfirmed version is never handed out to run or
    attested as running."""
    if not slots.trial:
        return slots.active
    return slots.inactive if slots.inactive in slots.slots else None


def counter_record(component: str) -> str:
    return f"update.counter.{component}"


@dataclass(frozen=True)
class Outcome:
    """How one update ended: ``state`` is accepted, rejected, reverted or failed; ``why``
    the reason code (None when accepted); ``detail`` a line for people."""

    state: str
    component: str
    version: str
    why: str | None = None
    detail: str = ""
    #: seconds (of the health check's clock) the trial took; 0 when there was none
    trial_s: float = 0.0


@dataclass
class _Pending:
    component: str
    meta: TargetMeta
    length: int
    hashes: dict[str, str]
    slot: str


class UpdateAgent:
    """The device's update agent over one protected storage and one slots folder."""

    def __init__(self, storage: ProtectedStorage, slots: Slots, *, product_class: str,
                 device_id: str, health: HealthCheck | None = None,
                 tinyward_version: Version | None = None) -> None:
        self.storage = storage
        self.slots = slots
        self.product_class = product_class
        self.device_id = device_id
        self.health = health or HealthCheck()
        self.tinyward_version = tinyward_version or Version.parse(__version__)
        self._pending: _Pending | None = None
        self._verdict: Verdict | None = None
        self._root = os.path.abspath(slots.root)
        self._thread_lock = threading.RLock()
        self._depth = 0
        if os.path.lexists(slots.root):
            check_safe_folder(slots.root)
        record = self._record()
        if (record.root is not None and record.root != self._root
                and any(c.active for c in record.components.values())):
            raise UnsafeSlots(f"the installed versions were recorded in {record.root}, not "
                              f"{self._root}: refusing to run from another slots folder")
        self.machine = UpdateMachine.from_record(record.update)

    @classmethod
    def for_device(cls, device: Any, *, product_class: str | None = None,
                   health: HealthCheck | None = None, slots_dir: Path | None = None,
                   limits: ArchiveLimits | None = None) -> UpdateAgent:
        """The agent of a :class:`tinyward.trust.device.Device`; slots in ``slots_dir``
        (default ``<device dir>.slots`` beside the device folder, created 0755: an app's
        slots must lie outside the device folder, which its sandbox may not read; the
        folder is refused if others could change it, :class:`UnsafeSlots`). The product
        class defaults to the
        device bundle's (``Device.product_class()``); an app's trial sandbox, unless
        ``health`` names one, is ``device run``'s (the device folder secret)."""
        if product_class is None:
            getter = getattr(device, "product_class", None)
            product_class = getter() if callable(getter) else None
        if not product_class:
            raise Misuse("the device has no product class; pass product_class=")
        health = health or HealthCheck()
        if health.sandbox_config is None:
            # the trial runs the app as `device run` will: the device folder is secret
            from tinyward.app.sandbox import SandboxConfig

            health = replace(health, sandbox_config=SandboxConfig(
                secret_paths=(Path(device.directory),)))
        root = Path(slots_dir) if slots_dir is not None else default_slots_dir(
            Path(device.directory))
        if not os.path.lexists(root):
            make_dir(root)
        slots = Slots(root, limits)
        return cls(device.storage, slots, product_class=product_class,
                   device_id=device.device_id, health=health)

    # ---- what the device says -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The report's ``upd`` field: state, installed version per component, and the
        reason code of the last failure (absent when there is none)."""
        record = self._record()
        versions = {name: str(c.version) for name, c in sorted(record.components.items())
                    if c.version is not None}
        status: dict[str, Any] = {"state": self.machine.state.value, "ver": versions}
        if self.machine.why is not None:
            status["why"] = self.machine.why
        return status

    def installed(self, component: str) -> Version | None:
        """The running (active slot's) version of ``component``."""
        return self._record().get(component).version

    def active_content(self, component: str) -> Path | None:
        """The app folder (or file) of ``component`` to run: the confirmed version, never
        one on trial (:func:`_confirmed`); None if none is installed."""
        slot = _confirmed(self._record().get(component))
        return None if slot is None else self.slots.content(component, slot)

    def counter(self, component: str) -> int:
        """The component's anti-rollback counter (0: never raised)."""
        if not self.storage.exists(counter_record(component)):
            return 0
        value: int = struct.unpack(">Q", self.storage.read(counter_record(component)))[0]
        return value

    def software_components(self) -> list[Any]:
        """The slots that run (:func:`_confirmed`: never one on trial), measured now, as
        attestation software components (pass them
        to ``Device.attestation_token(components=...)``). Raises ``MeasurementError``."""
        from tinyward.trust.measurement import UNSIGNED_SIGNER_ID, measure_files

        out = []
        for name, slots in sorted(self._record().components.items()):
            slot = _confirmed(slots)
            if slot is None:
                continue
            out.append(measure_files([self.slots.content(name, slot)],
                                     MEASUREMENT_TYPES[name], UNSIGNED_SIGNER_ID,
                                     version=str(slots.slots[slot].version)))
        return out

    # ---- the update ---------------------------------------------------------------------

    @_exclusively
    def offer(self, component: str, version: Version) -> None:
        """An update of ``component`` to ``version`` begins (the download starts).

        Raises:
            UpdateBusy: another update is in progress.
        """
        if self.machine.state in _BUSY:
            raise UpdateBusy(f"an update of {self.machine.component} is in progress "
                             f"({self.machine.state.value})")
        self.machine.offer(component, version)
        self._save()

    @_exclusively
    def refuse(self, error: UpdateRefused, component: str | None = None,
               version: Version | None = None) -> Outcome:
        """The download was refused (by TUF, the link): record it as ``rejected`` with the
        error's code. ``component`` and ``version`` start the update first when
        :meth:`offer` was not called (a refusal before the download began).

        Raises:
            UpdateBusy: another update is in progress.
        """
        if self.machine.state is not State.DOWNLOADING:
            if component is None or version is None:
                raise Misuse("refuse() before offer() needs the component and version")
            self.offer(component, version)
        self.machine.fire(Event.REFUSED, why=error.code)
        self._save()
        return self._outcome(str(error))

    @_exclusively
    def apply(self, component: str, target: Path, meta: TargetMeta, length: int,
              hashes: Mapping[str, str]) -> Outcome:
        """Stage ``target`` (verified by TUF) and, if that succeeds, activate it."""
        outcome = self.stage(component, target, meta, length, hashes)
        return outcome if outcome is not None else self.activate()

    @_exclusively
    def stage(self, component: str, target: Path, meta: TargetMeta, length: int,
              hashes: Mapping[str, str]) -> Outcome | None:
        """Check the target is installable, then write it into the inactive slot.

        Returns None when staged (call :meth:`activate`), else the :class:`Outcome`
        (rejected or failed). Raises :class:`UpdateBusy` during another update.
        """
        if component not in COMPONENTS:
            raise Misuse(f"component {component!r} is not one of {', '.join(COMPONENTS)}")
        if self.machine.state is not State.DOWNLOADING or self.machine.component != component:
            self.offer(component, meta.version)
        self.machine.version = meta.version
        try:
            if meta.component != component:
                raise BadTargetMeta(f"the target is a {meta.component}, not a {component}")
            current = self.installed(component)
            floor = self.counter(component)
            if floor and (current is None or floor > current.as_counter()):
                current = Version.from_counter(floor)
            meta.check_installable(product_class=self.product_class, device_id=self.device_id,
                                   installed=current, tinyward_version=self.tinyward_version)
        except UpdateRefused as refusal:
            return self.refuse(refusal)
        except TrustError as error:  # the counter record deleted or altered: fail closed
            return self._finish(Event.IO_ERROR, UpdateStorageTampered.code,
                                f"the update records in protected storage: {error}")
        self.machine.fire(Event.DOWNLOADED)  # the table's action: WRITE_SLOT, done here
        record = self._record()
        slots = record.get(component)
        # The inactive slot's old content is forgotten *before* a byte of it changes.
        self._save(record.with_component(component, slots.without(slots.inactive)))
        try:
            slot = self.slots.write(component, slots, Path(target), length)
        except UpdateRefused as refusal:  # BadArchive, TooLong
            return self._finish(Event.VERIFY_FAILED, refusal.code, str(refusal))
        except OSError as error:
            return self._finish(Event.IO_ERROR, UpdateIOError.code,
                                f"writing the slot failed: {error}")
        except Exception as error:  # noqa: BLE001 - a bug, ours or a library's: never stay staged
            return self._finish(Event.IO_ERROR, BUG, f"writing the slot raised "
                                f"{type(error).__name__}: {error}")
        self._pending = _Pending(component, meta, length, dict(hashes), slot)
        return None

    @_exclusively
    def activate(self) -> Outcome:
        """Check the staged slot again, switch to it, run its trial, accept or revert."""
        pending = self._pending
        if self.machine.state is not State.STAGED or pending is None:
            raise Misuse("nothing is staged; call stage() first")
        self._pending = None
        try:
            info = self.slots.verify(pending.component, pending.slot, pending.meta.version,
                                     pending.length, pending.hashes)
        except SlotCorrupt as refusal:
            return self._finish(Event.VERIFY_FAILED, refusal.code, str(refusal))
        except Exception as error:  # noqa: BLE001 - a bug: never stay staged
            return self._finish(Event.IO_ERROR, BUG, f"checking the slot raised "
                                f"{type(error).__name__}: {error}")
        step = self.machine.fire(Event.SLOT_VERIFIED)
        self._verdict = None
        try:
            self._do(step.actions, info=info, slot=pending.slot)
        except OSError as error:
            # The switch (a protected-storage write, e.g. on a full disk) failed: the
            # record still says staged. End it there rather than stay busy.
            self.machine = UpdateMachine.from_record(self._record().update)
            if self.machine.state is not State.STAGED:
                raise
            return self._finish(Event.IO_ERROR, UpdateIOError.code,
                                f"switching to the new slot failed: {error}")
        verdict = self._verdict
        if verdict is None:
            raise Misuse("the table's slot-verified step did not start a trial")
        if verdict.ok:
            outcome = self._finish(Event.HEALTH_OK, None, verdict.detail)
        else:
            event = _VERDICT_EVENTS.get(verdict.why or "", Event.HEALTH_FAILED)
            outcome = self._finish(event, verdict.why, verdict.detail)
        return replace(outcome, trial_s=verdict.elapsed_s)

    @_exclusively
    def on_start(self) -> dict[str, Any]:
        """Recover at boot from whatever a power cut left, then check the running slots.

        An update cut short before its switch is ``failed`` (its slot discarded); a trial
        cut short is ``reverted`` (not resumed: an unconfirmed version never survives a
        restart); an acceptance cut short raises the counter again. Returns
        :meth:`status`. Raises :class:`SlotCorrupt` if a running slot's content is not
        what was switched to.
        """
        self._pending = None
        self.machine = UpdateMachine.from_record(self._record().update)
        step = self.machine.fire(Event.POWER_CUT_RECOVERY, why=INTERRUPTED if
                                 self.machine.state in (*_BUSY,) else None)
        self._do(step.actions)
        if step.actions:
            self._save()
        self.check_running()
        return self.status()

    def check_running(self) -> None:
        """Measure every active slot again; raise :class:`SlotCorrupt` for one that is not
        what was switched to (half-written, or changed on disk since)."""
        for name, slots in self._record().components.items():
            if slots.active is None:
                continue
            try:
                now = self.slots.measure(name, slots.active)
            except (MeasurementError, OSError) as error:
                raise SlotCorrupt(f"the running {name} cannot be measured: {error}") from None
            if now != slots.slots[slots.active].measurement:
                raise SlotCorrupt(f"the running {name} ({slots.version}) is not what was "
                                  "installed: its files changed on disk")

    # ---- the I/O of the table's actions -------------------------------------------------

    def _finish(self, event: Event, why: str | None, detail: str) -> Outcome:
        step = self.machine.fire(event, why=why)
        self._do(step.actions)
        self._save()
        return self._outcome(detail)

    def _do(self, actions: tuple[Action, ...], *, info: SlotInfo | None = None,
            slot: str | None = None) -> None:
        component = self.machine.component
        for action in actions:
            if component is None:  # nothing was ever offered: nothing to do
                continue
            record = self._record()
            slots = record.get(component)
            if action is Action.SWITCH:
                if info is None or slot is None or slot == slots.active:
                    raise Misuse("switch needs the verified inactive slot")
                self._save(record.with_component(component, slots.switched(slot, info)))
            elif action is Action.START_TRIAL:
                self._verdict = self._trial(component, slots)
            elif action is Action.CONFIRM:
                self._save(record.with_component(component, slots.confirmed()))
            elif action is Action.RAISE_COUNTER:
                self._raise_counter(component, slots)
            elif action is Action.REVERT:
                if slots.trial:
                    self._save(record.with_component(component, slots.reverted()))
            elif action is Action.DISCARD_SLOT:
                if slots.inactive in slots.slots:
                    self._save(record.with_component(component, slots.without(slots.inactive)))
                # forgotten in the record: whatever files remain are only litter
                with contextlib.suppress(OSError):
                    self.slots.discard(component, slots.inactive)
            # WRITE_SLOT is done by stage(); REPORT: status() is what the report reads

    def _trial(self, component: str, slots: ComponentSlots) -> Verdict:
        """The health check's verdict; then, if it passed, the slot measured again: a file
        changed during the trial (by the app itself, were its sandbox to allow it) fails
        it. Whatever the check raises is a failed trial, never a trial left running."""
        active = slots.active or "a"
        try:
            verdict = self.health.run(component, self.slots.content(component, active))
        except Exception as error:  # noqa: BLE001 - the new version must not stay active
            return Verdict(False, TrialFailed.code,
                           f"the trial raised {type(error).__name__}: {error}")
        if not verdict.ok:
            return verdict
        try:
            now = self.slots.measure(component, active)
        except (MeasurementError, OSError) as error:
            now = f"unmeasurable: {error}"
        if now != slots.slots[active].measurement:
            return replace(verdict, ok=False, why=SlotCorrupt.code,
                           detail=f"the new {component}'s files changed during its trial")
        return verdict

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One update at a time on a slots folder: the folder's ``flock`` (other processes,
        other agents) and a lock of this agent (other threads); either held is
        :class:`UpdateBusy`. On entry the state is read again from the sealed record: an
        agent's memory is never trusted over what another process recorded."""
        if not self._thread_lock.acquire(blocking=False):
            raise UpdateBusy("another thread is applying an update with this agent")
        try:
            if self._depth == 0:
                fd = self.slots.lock()
                try:
                    self.machine = UpdateMachine.from_record(self._record().update)
                except BaseException:
                    os.close(fd)
                    raise
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    os.close(fd)
        finally:
            self._thread_lock.release()

    def _raise_counter(self, component: str, slots: ComponentSlots) -> None:
        version = slots.version
        if version is None or slots.trial:
            return  # never for a version that may still revert
        with self.storage.transaction():
            if self.counter(component) < version.as_counter():
                self.storage.write(counter_record(component),
                                   struct.pack(">Q", version.as_counter()))

    def _outcome(self, detail: str) -> Outcome:
        return Outcome(self.machine.state.value, self.machine.component or "",
                       str(self.machine.version or ""), self.machine.why, detail)

    def _record(self) -> SlotRecord:
        try:
            raw = self.storage.read(SLOT_RECORD)
        except RecordMissing:
            if self.storage.exists(SLOT_RECORD):
                raise
            return SlotRecord()
        try:
            return SlotRecord.from_json(json.loads(raw))
        except ValueError as error:
            raise SlotCorrupt(f"the slot record does not parse: {error}") from None

    def _save(self, record: SlotRecord | None = None) -> None:
        """Write the slot record (with the machine's state) in one atomic write."""
        with self.storage.transaction():
            current = record if record is not None else self._record()
            current = replace(current, update=self.machine.to_record(), root=self._root)
            self.storage.write(SLOT_RECORD,
                               json.dumps(current.to_json(), sort_keys=True).encode())
